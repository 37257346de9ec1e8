# Entry points for humans and CI. Every target installs what it needs first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
export SNAPFLOW_VENV := $(abspath $(VENV))

.PHONY: setup demo test test-fast lock clean

setup:
	@scripts/setup.sh

# The main job: simulated robot -> bags -> teacher -> SnapFlow over ROS -> hot swap -> closed-loop table.
demo: setup
	$(VENV)/bin/snapflow sim-demo

# The whole test suite, slow end-to-end tests included (what CI runs).
test: setup
	$(PY) -m pytest

# Everything but the tests marked slow.
test-fast: setup
	$(PY) -m pytest -m "not slow"

# Re-pin requirements/lock.txt from requirements/requirements.in (Linux x86_64, Python 3.12).
lock: setup
	$(VENV)/bin/uv pip compile requirements/requirements.in -o requirements/lock.txt \
		--python-version 3.12 --python-platform x86_64-manylinux_2_28 --no-header

clean:
	rm -rf $(VENV) build install log .pytest_cache
