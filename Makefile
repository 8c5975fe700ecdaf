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
# Each simulation is its own Python process that imports tinyattn, cocotb and NumPy:
# with PYTHONDONTWRITEBYTECODE set (some sandboxes set it) the editable tinyattn is
# compiled from source every time, 0.8 s a launch. The caches go to __pycache__/
# (ignored by git).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: demo test test-slow lint bench mutants clean distclean sim-deps

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[sim,model,sweep,dev]'
	@touch $(STAMP)

# System packages, installed with apt when missing and we may (root or
# passwordless sudo): iverilog (Icarus), liblz4-dev (Verilator's FST waves),
# gcc-riscv64-unknown-elf (the generated headers must compile for rv32), ccache
# (Verilator's C++ compiles through it when present: sim/runner.py sets OBJCACHE).
# Without apt the Icarus cases are skipped with a loud notice in the test summary
# (with CI set they fail), and Verilator builds run without ccache.
APT_PKGS := $(strip $(if $(shell command -v iverilog),,iverilog) \
	$(if $(wildcard /usr/include/lz4.h),,liblz4-dev) \
	$(if $(shell command -v riscv64-unknown-elf-gcc),,gcc-riscv64-unknown-elf) \
	$(if $(shell command -v ccache),,ccache))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)

sim-deps:
	@if [ -z "$(APT_PKGS)" ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && { [ -z "$(SUDO)" ] || sudo -n true 2>/dev/null; }; then \
		echo "installing $(APT_PKGS) with apt-get"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS) >/dev/null \
		|| echo "!!! WARNING: apt-get could not install $(APT_PKGS) !!!"; \
	else \
		echo "!!! WARNING: $(APT_PKGS) missing and apt-get is not usable here:" \
		     "Icarus cases will be SKIPPED, Verilator waves unavailable," \
		     "Verilator builds without ccache !!!"; \
	fi

# The main job: the 2-layer MobileBERT fixture through firmware on the cluster RTL.
# (`tinyattn demo` alone is the smaller compute-core demo.)
demo: $(STAMP) sim-deps
	$(VENV)/bin/tinyattn run tests/fixtures/mobilebert-2l --seq 128

test: $(STAMP) sim-deps
	SIM=$(SIM) $(PY) -m pytest -n $(JOBS) --dist worksteal -m "not slow" $(PYTEST_ARGS)

# The slower sweeps: larger configurations and the 24-layer model.
test-slow: $(STAMP) sim-deps
	SIM=$(SIM) $(PY) -m pytest -n $(JOBS) --dist worksteal -m slow $(PYTEST_ARGS)

# Benchmarks (sim/benchmarks/; Verilator, default configuration): tables on stdout, records in
# build/bench.json.
bench: $(STAMP) sim-deps
	@command -v yosys >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get install -y -qq yosys >/dev/null; } \
		|| echo "!!! yosys missing and not installable: area is not measured !!!"
	$(VENV)/bin/tinyattn bench all --json build/bench.json

# Mutation testing: each mutant of the design must make a bench fail (Icarus, small
# configurations; the table goes to docs/verification.md by hand).
mutants: $(STAMP) sim-deps
	$(VENV)/bin/tinyattn mutants --markdown build/mutants.md

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/tinyattn lint

# build/ is this checkout's build cache (netlists, simulator and firmware builds): every
# tinyattn command run from this checkout's .venv uses it, from whatever folder
# (`tinyattn cache info`). TINYATTN_BUILD_DIR moves it; an installed tinyattn uses
# ~/.cache/tinyattn, which `tinyattn cache clear` empties.
clean:
	rm -rf build out .pytest_cache .ruff_cache .hypothesis
	find . -name __pycache__ -not -path './$(VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) *.egg-info
