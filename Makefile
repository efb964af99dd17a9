# The two commands: `make demo` and `make test`. Both build .venv first when needed.
PY := .venv/bin/python
STAMP := .venv/.fewshot-sla-installed

.PHONY: demo test test-unit test-wheel test-fast lint bench clean-venv

$(STAMP): pyproject.toml scripts/install.sh scripts/build_learn2learn.sh
	scripts/install.sh
	touch $(STAMP)

# CPU threads of the demo: 0 = auto (the cores other processes leave free; fewshot_sla/threads.py)
NUM_THREADS ?= 0

demo: $(STAMP)
	WANDB_SILENT=true $(PY) -m fewshot_sla.demo --out runs/demo --num-threads $(NUM_THREADS)
	$(PY) -m episodes.demo --num-threads $(NUM_THREADS)

# The whole suite, then the built wheel in a fresh environment outside the checkout.
test: test-unit test-wheel

test-unit: $(STAMP)
	WANDB_MODE=offline WANDB_SILENT=true $(PY) -m pytest -q --durations=15

test-wheel: $(STAMP)
	scripts/ci_wheel.sh

test-fast: $(STAMP)
	WANDB_MODE=offline $(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check fewshot_sla episodes longtail tests bench lab
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) bench/sla_overhead.py

clean-venv:
	rm -rf .venv
