# Two commands do all set-up on a fresh Debian/Ubuntu machine with Python >= 3.11:
#   make demo   -- install, then run every capability on its built-in sample data
#   make test   -- install what the tests need (virtual display, Mesa GL, Qt libraries) and run the suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of PyTorch, installed before the package so nothing pulls CUDA wheels.
# Elsewhere: make TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url <your CPU wheel index>"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
SYSTEM_PACKAGES := xvfb xauth libgl1 libegl1 libgl1-mesa-dri libxkbcommon-x11-0 libxcb-cursor0 libxcb-icccm4 \
	libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 \
	libdbus-1-3 libfontconfig1 libglib2.0-0
XVFB := xvfb-run -a -s "-screen 0 1600x1200x24"

.PHONY: demo test test-fast setup system-deps bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml napari.yaml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

system-deps:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

demo: system-deps setup
	@if [ -n "$$DISPLAY" ] && [ -z "$$MBDL_HEADLESS" ]; then \
		$(VENV)/bin/mbdl demo --gui; \
	else \
		$(XVFB) $(VENV)/bin/mbdl demo; \
	fi

test: system-deps setup
	$(XVFB) $(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-fast: system-deps setup
	$(XVFB) $(PY) -m pytest -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(PY) -m pip install -q -e ".[bench]"  # the benchmarks' peers (BayesShrink needs PyWavelets)
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) demo_output .pytest_cache
