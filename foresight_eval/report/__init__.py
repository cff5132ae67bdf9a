"""Reports and leaderboards over run folders: self-contained HTML, Markdown twins and CSV."""

from foresight_eval.report.build import ReportFiles, build_report_context, report
from foresight_eval.report.leaderboard import Leaderboard, build_leaderboard, leaderboard
from foresight_eval.runs import Run, load_run, load_runs

__all__ = ["Leaderboard", "ReportFiles", "Run", "build_leaderboard", "build_report_context", "leaderboard",
           "load_run", "load_runs", "report"]
