# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= runs/demo

.PHONY: install demo test fixtures benchmark report seed-replay clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

## Score the bundled fixtures: a mildly blurred prediction set against the references, with the
## reference annotations and synthetic detections that the spatial metrics read.
demo: install
	$(BIN)/foresight-eval score fixtures/preds/blur_mild fixtures/refs --context 4 \
		--ref-annotations fixtures/coco/refs.json --pred-detections fixtures/coco/detections/blur_mild.json \
		--out $(RUN_DIR)

test: install
	$(BIN)/python -m pytest -q

## Regenerate fixtures/ from fixtures/generate.py (deterministic).
fixtures: install
	$(BIN)/python fixtures/generate.py
	$(BIN)/python fixtures/generate_latents.py

benchmark: install
	$(BIN)/python benchmarks/score_throughput.py

## Example report and leaderboard in reports/: three fixture prediction sets scored into runs/report/.
REPORT_SETS := blur_mild blur_strong noise_mild
report: install
	for set in $(REPORT_SETS); do \
		$(BIN)/foresight-eval score fixtures/preds/$$set fixtures/refs --context 4 --metrics psnr,ssim,mae \
			--out runs/report/$$set >/dev/null || exit 1; \
	done
	$(BIN)/foresight-eval report $(addprefix runs/report/,$(REPORT_SETS)) --gates reports/example-gates.yaml \
		--title "Example: fixture prediction sets" -o reports/example
	$(BIN)/foresight-eval leaderboard $(addprefix runs/report/,$(REPORT_SETS)) \
		--title "Example leaderboard: fixture prediction sets" -o reports/leaderboard

## The research log's pipeline in one command (examples/seed_replay.py): generate with both encoders (VLM-only,
## hybrid DINOv2 + VLM) -> score -> check Gate 1 and Gate 2 -> report and leaderboard, in runs/seed-replay-PRESET/.
## PRESET=tiny runs on a CPU; PRESET=full on a GPU, with random weights (untrained: the gates fail, the report says so).
PRESET ?= tiny
REPLAY_ARGS ?= $(if $(filter full,$(PRESET)),--random-weights --device cuda,--device cpu)
seed-replay: install
	$(BIN)/python examples/seed_replay.py --preset $(PRESET) $(REPLAY_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
