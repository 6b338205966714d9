"""The content-addressed build cache.

Layout under the cache root ($CYTOOL_CACHE_DIR, else $XDG_CACHE_HOME/cytool, else
~/.cache/cytool), created private to the user (0700):

    manifests/<manifest key>.json   for one source file and one set of build settings:
                                    the files it depended on (with their hashes) and the
                                    key of the entry they produced
    entries/<entry key>/            one published build: <mod>.c, <mod><EXT_SUFFIX>,
                                    cython_debug/, build.json
    tmp/                            builds in progress (renamed into entries/ when done)
    locks/<entry key>.lock          serialises builders of one entry

The manifest makes a warm lookup cheap (hash a handful of files, no Cython import),
in the spirit of ccache's direct mode. The entry key hashes the settings plus every
dependency's content, so an edit anywhere (.pyx, .pxd, .pxi, header) gives a new entry,
and reverting it finds the old one again.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Dict, Iterator, Optional


def cache_root() -> Path:
    explicit = os.environ.get("CYTOOL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cytool"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def hash_text(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8", "surrogateescape"))
        digest.update(b"\0")
    return digest.hexdigest()


def hash_file(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class BuildCache:
    def __init__(self, root: Optional[Path] = None):
        self.root = root or cache_root()

    def prepare(self) -> None:
        try:
            ensure_private_dir(self.root)
            os.chmod(self.root, 0o700)
            for sub in ("manifests", "entries", "tmp", "locks"):
                ensure_private_dir(self.root / sub)
        except OSError as error:
            from cytool.errors import CytoolError

            raise CytoolError(
                f"cannot use the build cache at {self.root}: {error.strerror or error}",
                hint="point $CYTOOL_CACHE_DIR (or $XDG_CACHE_HOME) at a directory you can write",
            ) from error

    def entry_dir(self, entry_key: str) -> Path:
        return self.root / "entries" / entry_key

    # -- manifests ---------------------------------------------------------------
    def lookup(self, manifest_key: str) -> Optional[str]:
        """The entry key recorded for this manifest if every dependency is unchanged."""
        path = self.root / "manifests" / f"{manifest_key}.json"
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        deps: Dict[str, Optional[str]] = manifest.get("dependencies", {})
        for dep, digest in deps.items():
            if hash_file(Path(dep)) != digest:
                return None
        entry_key = manifest.get("entry")
        if not isinstance(entry_key, str) or not (self.entry_dir(entry_key) / "build.json").exists():
            return None
        return entry_key

    def record(self, manifest_key: str, entry_key: str, dependencies: Dict[str, Optional[str]]) -> None:
        self.prepare()
        body = json.dumps({"entry": entry_key, "dependencies": dependencies}, indent=1)
        self._atomic_write(self.root / "manifests" / f"{manifest_key}.json", body)

    def _atomic_write(self, path: Path, text: str) -> None:
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    # -- building and publishing -------------------------------------------------
    @contextlib.contextmanager
    def locked(self, entry_key: str) -> Iterator[None]:
        """Hold the entry's lock: concurrent builders of the same entry wait their turn."""
        self.prepare()
        with open(self.root / "locks" / f"{entry_key}.lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def new_build_dir(self) -> Path:
        import tempfile

        self.prepare()
        return Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="build-"))

    def publish(self, build_dir: Path, entry_key: str) -> Path:
        """Move a finished build into place atomically (caller holds the entry lock)."""
        final = self.entry_dir(entry_key)
        if final.exists():
            self.discard(build_dir)
            return final
        os.rename(build_dir, final)
        return final

        os.rename(build_dir, final)
        return final

    def discard(self, build_dir: Path) -> None:
        import shutil

        shutil.rmtree(build_dir, ignore_errors=True)
