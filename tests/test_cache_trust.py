"""The build cache is a trust boundary: it holds code cytool loads. Entries others could
have written are never used, damaged entries are rebuilt (never a SIGBUS or a
traceback), a build publishes what it compiled, and a folder the user named is never
chmod-ed. Real builds, real files; the cases that need another user run as root only."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from cytool.build import build_module

SOURCE = "import sys\nprint('ma', sum(range(int(sys.argv[1]))))\n"


@pytest.fixture
def ma(tmp_path: Path) -> Path:
    path = tmp_path / "ma.pyx"
    path.write_text(SOURCE)
    return path


def entry_files(cache: Path, pattern: str):
    return sorted(cache.glob(f"entries/*/{pattern}"))


def test_truncated_module_is_rebuilt(ma: Path, fresh_cache: Path, run_cytool) -> None:
    assert run_cytool("run", ma, "--", 1000).stdout.strip() == "ma 499500"
    (so,) = entry_files(fresh_cache, "ma*.so")
    so.write_bytes(so.read_bytes()[:1000])
    done = run_cytool("run", ma, "--", 1000)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ma 499500"


def test_replaced_module_of_the_same_size_is_rebuilt(ma: Path, fresh_cache: Path, run_cytool) -> None:
    assert run_cytool("run", ma, "--", 10).stdout.strip() == "ma 45"
    (so,) = entry_files(fresh_cache, "ma*.so")
    data = bytearray(so.read_bytes())
    data[-1] ^= 0xFF  # same size, other content: the stat differs, so the digest is checked
    so.write_bytes(bytes(data))
    done = run_cytool("run", "-v", ma, "--", 10)
    assert done.stdout.strip() == "ma 45" and "cythonizing" in done.stderr


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_damaged_build_record_is_rebuilt(ma: Path, fresh_cache: Path, run_cytool, damage: str) -> None:
    assert run_cytool("run", ma, "--", 1000).returncode == 0
    for record in entry_files(fresh_cache, "build.json"):
        if damage == "missing":
            record.unlink()
        else:
            record.write_text("{garbage")
    for _ in range(2):
        done = run_cytool("run", ma, "--", 1000)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert done.stdout.strip() == "ma 499500"


def test_entry_without_debug_information_is_rebuilt(ma: Path, fresh_cache: Path) -> None:
    first = build_module(ma)
    shutil.rmtree(first.build_dir / "cython_debug")
    second = build_module(ma)
    assert not second.cached and second.debug_info.is_file()
    assert build_module(ma).cached


def test_existing_shared_folder_is_not_chmodded(ma: Path, tmp_path: Path, run_cytool) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "someone_elses_file").write_text("x")
    done = run_cytool("run", ma, "--", 10, env={"CYTOOL_CACHE_DIR": str(shared)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ma 45"
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    private = shared / f"cytool-{os.getuid()}"
    assert private.is_dir() and stat.S_IMODE(private.stat().st_mode) == 0o700
    assert sorted(p.name for p in shared.iterdir()) == sorted([private.name, "someone_elses_file"])


def test_new_cache_folder_is_private(ma: Path, tmp_path: Path, run_cytool) -> None:
    root = tmp_path / "new" / "cache"
    assert run_cytool("run", ma, "--", 3, env={"CYTOOL_CACHE_DIR": str(root)}).returncode == 0
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


def test_private_subfolder_planted_by_someone_else_is_refused(ma: Path, tmp_path: Path, run_cytool) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    planted = shared / f"cytool-{os.getuid()}"
    planted.mkdir()
    planted.chmod(0o777)  # writable by others: whoever made it could plant code
    done = run_cytool("run", ma, "--", 10, env={"CYTOOL_CACHE_DIR": str(shared)})
    assert done.returncode != 0
    assert f"refusing the build cache at {planted}" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the cache to another user (chown)")
def test_cache_owned_and_writable_by_another_user_is_not_loaded(ma: Path, tmp_path: Path, run_cytool) -> None:
    cache = tmp_path / "cache"
    env = {"CYTOOL_CACHE_DIR": str(cache)}
    assert run_cytool("run", ma, "--", 10, env=env).stdout.strip() == "ma 45"
    other = tmp_path / "other.pyx"
    other.write_text("print('code planted in the cache by another user')\n")
    planted = build_module(other).module_path
    subprocess.run(["chown", "-R", "nobody:nogroup", str(cache)], check=True)
    subprocess.run(["chmod", "-R", "a+rwX", str(cache)], check=True)
    for so in entry_files(cache, "ma*.so"):
        shutil.copy(planted, so)
    done = run_cytool("run", ma, "--", 10, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ma 45"  # built again in a private sub-folder; the planted module never ran
    assert stat.S_IMODE(cache.stat().st_mode) == 0o777  # and the folder was left as it was


def test_source_saved_during_the_build_is_built_again(tmp_path: Path, fresh_cache: Path, run_cytool) -> None:
    """An editor saves version B while the compiler works on version A: the entry must not
    be published under B's content. A compiler wrapper makes the timing exact."""
    source = tmp_path / "slow.pyx"
    source.write_text("print('VERSION A')\n")
    wrapper = tmp_path / "cc-that-saves"
    mark = tmp_path / "saved-once"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"if [ ! -e {mark} ]; then touch {mark}; sleep 0.05; printf \"print('VERSION B')\\n\" > {source}; fi\n"
        f"exec {shutil.which('gcc')} \"$@\"\n"
    )
    wrapper.chmod(0o755)
    env = {"CC": str(wrapper)}
    during = run_cytool("run", source, env=env)
    assert during.returncode == 0, during.stderr
    assert during.stdout.strip() == "VERSION B"  # the build noticed and started again
    assert run_cytool("run", source, env=env).stdout.strip() == "VERSION B"
