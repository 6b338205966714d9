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
