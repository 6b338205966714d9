"""Shared pytest set-up: every test session builds into its own private cache."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Optional

import pytest

REPO = Path(__file__).resolve().parent.parent

# Fixture projects carry test files of their own (run by the tests, in copies).
collect_ignore_glob = ["fixtures/*", "realworld/*"]

# pytest's own fixture for running pytest on test files (the cytool pytest plugin's tests)
pytest_plugins = ["pytester"]


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache shared by the whole session (tests that need a fresh one use `fresh_cache`)."""
    path = tmp_path_factory.mktemp("cytool-cache")
    old = os.environ.get("CYTOOL_CACHE_DIR")
    os.environ["CYTOOL_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("CYTOOL_CACHE_DIR", None)
    else:
        os.environ["CYTOOL_CACHE_DIR"] = old


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "cache"
    monkeypatch.setenv("CYTOOL_CACHE_DIR", str(path))
    return path


RunCytool = Callable[..., subprocess.CompletedProcess]


@pytest.fixture
def run_cytool() -> RunCytool:
    """Run `python -m cytool ARGS` in a subprocess, as a user would; capture its output."""

    def run(*args: object, cwd: Optional[Path] = None, env: Optional[dict] = None, timeout: float = 300) -> subprocess.CompletedProcess:
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        return subprocess.run(
            [sys.executable, "-m", "cytool", *map(str, args)],
            cwd=cwd,
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )

    return run


# -- interpreters for the gdb tests (cytool debug) ----------------------------------------
# CYTOOL_TEST_PYTHONS lists the interpreters the gdb tests run on: "venv" (this one) and
# versions found in pyenv or on PATH ("3.9,3.10,3.11,3.12,3.13": `make test-pythons`).
# Each version gets a venv with this Cython, made once per session, or kept under
# CYTOOL_TEST_VENVS to be reused by the next run.
DEBUG_PYTHONS = [p.strip() for p in os.environ.get("CYTOOL_TEST_PYTHONS", "venv,3.13").split(",") if p.strip()]
if "venv" in DEBUG_PYTHONS:  # this interpreter's version is covered by "venv"
    DEBUG_PYTHONS = [p for p in DEBUG_PYTHONS if p != "%d.%d" % sys.version_info[:2]]


def _find_interpreter(version: str) -> str:
    import glob
    import shutil

    found = sorted(glob.glob(f"{os.path.expanduser('~')}/.pyenv/versions/{version}.*/bin/python{version}"))
    found += sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}"))
    found += [p for p in (shutil.which(f"python{version}"),) if p and "/shims/" not in p]
    for candidate in found:
        if subprocess.run([candidate, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return candidate
    return ""


@pytest.fixture(scope="session", params=DEBUG_PYTHONS)
def debug_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An interpreter for the gdb tests: this venv's, or a version with Cython in its own venv."""
    return python_with_cython(request.param, tmp_path_factory)


# `cytool stack`, in-code breakpoints and the live view run on two interpreters only (CI
# time): this venv's and the newest other.
TWO_PYTHONS = ["venv", "3.13" if sys.version_info[:2] != (3, 13) else "3.9"]


@pytest.fixture(scope="session", params=TWO_PYTHONS)
def each_of_two_pythons(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A test using it runs twice: on this venv's interpreter, then on the newest other
    Python (with this Cython in a venv of its own, see python_with_cython)."""
    return python_with_cython(request.param, tmp_path_factory)


@pytest.fixture
def optimised_build_python(each_of_two_pythons: str) -> str:
    """The gdb tests of -O2/-O3 builds (where gcc puts a function's lines: much the same on
    every Python, and C++ and -O3 builds are slow): on this venv's interpreter and the
    newest other only (CI time)."""
    return each_of_two_pythons


@pytest.fixture(scope="session")
def stack_python(each_of_two_pythons: str) -> str:
    return each_of_two_pythons


@pytest.fixture(scope="session")
def tracing_python(each_of_two_pythons: str) -> str:
    """each_of_two_pythons, able to run `cytool profile`: cytool's tracer extension
    (cytool._cytrace) built in place for that interpreter, as `make install` does for this one."""
    if each_of_two_pythons != sys.executable:
        build_tracer_extension(each_of_two_pythons)
    return each_of_two_pythons


def python_with_cython(version: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """"venv" (this interpreter), or Python `version` with this Cython in a venv of its own
    (made once, kept under CYTOOL_TEST_VENVS when set); skips when that Python is missing."""
    if version == "venv":
        return sys.executable
    base = _find_interpreter(version)
    if not base:
        pytest.skip(f"Python {version} not found in pyenv or on PATH")
    import Cython

    kept = os.environ.get("CYTOOL_TEST_VENVS")
    venv = Path(kept) / version if kept else tmp_path_factory.getbasetemp() / f"python{version}"
    interpreter = venv / "bin" / "python"
    # what cytool imports (tomli before 3.11: pyproject.toml), and this Cython
    probe = [str(interpreter), "-c", "import Cython, jinja2, packaging, rich, sys\n"
             "if sys.version_info < (3, 11): import tomli\n"
             f"sys.exit(Cython.__version__ != {Cython.__version__!r})"]
    if interpreter.exists() and subprocess.run(probe, stderr=subprocess.DEVNULL).returncode == 0:
        return str(interpreter)
    subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
    pip = subprocess.run(
        [str(interpreter), "-m", "pip", "install", "-q", f"Cython=={Cython.__version__}", "setuptools", "packaging",
         "rich>=12", "jinja2>=3", "tomli>=1.1; python_version < '3.11'"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900,
    )
    if pip.returncode != 0:
        pytest.skip(f"cannot install Cython for {base}: {pip.stdout[-500:]}")
    return str(interpreter)


@pytest.fixture(scope="session")
def shapes(debug_python: str):
    """tests/fixtures/debug/shapes.pyx built at -O0 by that interpreter's cytool: (module .so, build dir)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "debug"))
    import gdbharness

    return gdbharness.build(debug_python, gdbharness.SHAPES)


def build_tracer_extension(python: str) -> None:
    """`setup.py build_ext --inplace` with that interpreter: cytool/_cytrace.<its suffix>.so
    next to this one's, linked to the same cytool/_lib/libcytrace.so. Skipped while that .so
    is newer than every file it is built from; a lock keeps parallel sessions apart."""
    import fcntl
    import glob

    suffix = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_config_var('EXT_SUFFIX'))"],
                            stdout=subprocess.PIPE, text=True, check=True).stdout.strip()
    target = REPO / "cytool" / f"_cytrace{suffix}"
    inputs = [REPO / "setup.py", REPO / "cytool" / "_lib" / "libcytrace.so"]
    inputs += [Path(p) for p in glob.glob(str(REPO / "runtime" / "python" / "*.[ch]"))]
    inputs += [Path(p) for p in glob.glob(str(REPO / "runtime" / "include" / "*.h"))]
    (REPO / "build").mkdir(exist_ok=True)
    with open(REPO / "build" / ".tracer-extension.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists() and all(p.stat().st_mtime <= target.stat().st_mtime for p in inputs if p.exists()):
            return
        done = subprocess.run([python, "setup.py", "-q", "build_ext", "--inplace", "--force"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        assert done.returncode == 0 and target.exists(), f"cannot build cytool's tracer for {python}:\n{done.stdout}"
