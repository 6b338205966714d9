# cytool's developer entry points. On a fresh Debian machine:
#   make demo   installs everything and runs cytool on the bundled example
#   make test   installs everything and runs the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
CYTOOL := $(VENV)/bin/cytool

# Debian packages: compiler, gdb, the C runtime's libraries, and what the tests drive.
APT_PACKAGES := gcc g++ make gdb tmux binutils elfutils libdw-dev libelf-dev liblz4-dev libzstd-dev \
                libunwind-dev chromium python3-dbg

.PHONY: all deps venv install demo test test-pythons bench sanitize realworld clean

all: install

deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:" $$missing; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

venv: $(PY)

install: deps venv
	$(PY) -m pip install -q -U "Cython>=3" setuptools wheel
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	@# an editable install does not run build_py: put the CYTOOL_PROFILE start-up hook in place
	$(PY) -c "import shutil, sysconfig; shutil.copy('cytool-autostart.pth', sysconfig.get_paths()['purelib'])"

demo: install
	$(CYTOOL) run examples/demo.pyx -- 200000
	$(CYTOOL) profile examples/demo.pyx -o demo.cytrace -- 200000

# The gdb tests run on every supported Python found (pyenv or PATH; a missing one is
# skipped), each in a venv kept in .venv-pythons/; `pytest` alone runs them on venv,3.13.
TEST_PYTHONS ?= venv,3.9,3.10,3.11,3.12,3.13
DEBUG_TESTS := tests/test_debug_gdb.py tests/test_debug_stops.py tests/test_debug_values.py \
               tests/test_debug_python.py tests/test_debug_threads.py tests/test_debug_foreign.py \
               tests/test_inline_break.py

test: install
	CYTOOL_TEST_PYTHONS=$(TEST_PYTHONS) CYTOOL_TEST_VENVS=$(CURDIR)/.venv-pythons $(PY) -m pytest -q

# only the gdb tests, on every supported Python
test-pythons: install
	CYTOOL_TEST_PYTHONS=$(TEST_PYTHONS) CYTOOL_TEST_VENVS=$(CURDIR)/.venv-pythons $(PY) -m pytest -q $(DEBUG_TESTS)

# heaptrack (Debian) is only for bench_stream_report.py's side-by-side column
bench: install
	@dpkg -s heaptrack >/dev/null 2>&1 || { SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends heaptrack; }
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/run_all.py

# cytool on real projects' sdists from PyPI (network; not part of `make test`)
realworld: install
	@missing=$$(for p in libdebuginfod-dev pkg-config; do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; fi
	tests/realworld/run.sh

sanitize: deps
	$(MAKE) -C runtime sanitize

clean:
	rm -rf build dist *.egg-info cytool/_lib cytool/*.so
