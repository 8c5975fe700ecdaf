# tinyattn entry points. The first use creates .venv and installs the pinned
# dependencies; `test` also installs Icarus Verilog with apt when it is missing
# and the machine allows it.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SIM ?= all
# pytest-xdist workers; 2 matches the reference machine.
JOBS ?= 2
# BLAS threads fight the simulators for the cores; one each is faster.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1

.PHONY: demo test test-slow lint bench clean distclean icarus

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[sim,model,dev]'
	@touch $(STAMP)

# Icarus: install with apt when missing and we may (root or passwordless sudo);
# otherwise the Icarus cases are skipped with a loud notice in the test summary.
icarus:
	@if command -v iverilog >/dev/null 2>&1 && command -v vvp >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing iverilog with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null && command -v apt-get >/dev/null 2>&1; then \
		echo "installing iverilog with sudo apt-get"; \
		sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog; \
	else \
		echo "!!! WARNING: iverilog is missing and cannot be installed here: Icarus cases will be SKIPPED !!!"; \
	fi

demo: $(STAMP)
	$(VENV)/bin/tinyattn demo

test: $(STAMP) icarus
	SIM=$(SIM) $(PY) -m pytest -n $(JOBS) -m "not slow" $(PYTEST_ARGS)

# The slower sweeps: larger configurations and the 24-layer model.
test-slow: $(STAMP) icarus
	SIM=$(SIM) $(PY) -m pytest -n $(JOBS) -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/tinyattn lint

clean:
	rm -rf build out .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
