# Entry points for humans and CI. Every target installs what it needs first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export SNAPFLOW_VENV := $(abspath $(VENV))

.PHONY: setup setup-gpu demo lint test test-fast gpu-check gpu-check-dry gpu-wheels lock clean

setup:
	@scripts/setup.sh

# The same with onnxruntime-gpu (CUDA/TensorRT providers) instead of onnxruntime; later `make`
# targets keep it, `SNAPFLOW_ORT=cpu make setup` switches back.
setup-gpu:
	@SNAPFLOW_ORT=gpu scripts/setup.sh

# The main job: simulated robot -> bags -> teacher -> SnapFlow over ROS -> hot swap -> closed-loop table.
demo: setup
	$(VENV)/bin/snapflow sim-demo

# The linter (rules in ruff.toml).
lint: setup
	$(VENV)/bin/ruff check

# The linter, then the whole test suite, slow end-to-end tests included (what CI runs).
test: lint
	$(PY) -m pytest

# Everything but the tests marked slow.
test-fast: lint
	$(PY) -m pytest -m "not slow"

# The GPU check (issue 14) on a GPU machine: full-size families, tables in $$OUT or runs/gpu_check.
gpu-check:
	scripts/gpu_check.sh

# Its plumbing on this CPU at tiny size (a few minutes).
gpu-check-dry: setup
	scripts/gpu_check.sh --dry-run

# The wheels the lent GPU machine (no network) needs, into .gpu-wheels/ (carry it there).
gpu-wheels: setup
	scripts/gpu_check.sh --fetch-wheels

# Re-pin requirements/lock.txt from requirements/requirements.in (Linux x86_64, Python 3.12).
lock: setup
	$(VENV)/bin/uv pip compile requirements/requirements.in -o requirements/lock.txt \
		--python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header

clean:
	rm -rf $(VENV) build install log .pytest_cache
