"""The content-addressed build cache, and the checks that make it safe to load from.

Layout under the cache root ($CYTOOL_CACHE_DIR, else $XDG_CACHE_HOME/cytool, else
~/.cache/cytool):

    manifests/<manifest key>.json   for one module and one set of build settings: up to
                                    MAX_CANDIDATES earlier builds, newest first, each the
                                    files it depended on (digest, size, mtime, inode) and
                                    the entry it produced
    entries/<entry id>/             one published build: <mod>.c, <mod><EXT_SUFFIX>,
                                    cython_debug/, build.json (which records the digest
                                    and the stat of every file it holds)
    setup-py/<key>.json             settings read from a project's setup.py
    tmp/                            builds in progress (renamed into entries/ when done)
    locks/<manifest key>.lock       one builder at a time per module and settings

The manifest key hashes the module, its source path and every build setting; a manifest
candidate matches when each file it lists still has its recorded content. A warm lookup
stats each file and hashes only those whose size, mtime or inode changed (ccache's direct
mode, with a stat fast path); an edit anywhere (.pyx, .pxd, .pxi, any header the compiler
read, an extra source) misses, and reverting it finds the earlier entry again without
compiling. An entry's name is a random build id chosen before compiling, so the debug
information can name the published folder (the compiler's -fdebug-prefix-map) although
the full list of headers is known only once the compiler has run.

Trust rules (README, "Security"): a cached .so is code we load, so the cache root must be
a folder owned by the current user that nobody else can write. A root that exists and
fails that test (a shared 1777 folder named by $CYTOOL_CACHE_DIR) is never chmod-ed:
cytool uses a private sub-folder `cytool-<uid>` of it, created 0700 and checked the same
way. Every entry is checked (owner, mode, recorded size/mtime/inode of its files, the full
digest when those differ) before it is used; a damaged entry is moved aside and rebuilt.
"""
from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path

from cytool.errors import CytoolError

TYPE_CHECKING = False  # typing itself costs milliseconds on every warm `cytool run`
if TYPE_CHECKING:
    import hashlib
    from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

MAX_CANDIDATES = 8
SUBFOLDERS = ("manifests", "entries", "tmp", "locks")

# A dependency as the manifest records it: [sha256 hex or None, size, mtime_ns, inode].
if TYPE_CHECKING:
    FileStamp = List[object]
else:
    FileStamp = list


def default_cache_root() -> Path:
    explicit = os.environ.get("CYTOOL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "cytool"


def cache_root() -> Path:
    """The folder cytool keeps its cache in (see the module doc for the rules)."""
    root = default_cache_root()
    if _is_private(root):
        return root
    if root.exists() and root.is_dir():
        return root / f"cytool-{os.getuid()}"
    return root


def _is_private(path: Path) -> bool:
    """Owned by us and not writable by group or others (a missing path is not)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not (st.st_mode & 0o022)


def _builtin_sha256() -> Optional[Callable[..., "hashlib._Hash"]]:
    """The interpreter's own SHA-256 (`_sha256` up to 3.11, `_sha2` from 3.12), if built."""
    import sys

    # a failed import scans the whole sys.path: ask only for this version's module
    for name in ("_sha2",) if sys.version_info >= (3, 12) else ("_sha256",):
        try:
            return __import__(name).sha256  # type: ignore[no-any-return]
        except (ImportError, AttributeError):
            continue
    return None


# `import hashlib` loads OpenSSL: about 3 ms on every warm `cytool run`, only to hash a
# few hundred bytes of key text. The built-in SHA-256 gives the same digests and costs
# nothing to load, but hashes about 13x slower (~10 ms/MB here), so content larger than
# SMALL_CONTENT goes to hashlib.
_small_sha256 = _builtin_sha256()
SMALL_CONTENT = 256 * 1024  # bytes
_READ_CHUNK = 1 << 20  # bytes


def _sha256(size_hint: int = 0) -> "hashlib._Hash":
    if _small_sha256 is not None and size_hint < SMALL_CONTENT:
        return _small_sha256()
    import hashlib

    return hashlib.sha256()


def hash_text(*parts: str) -> str:
    """SHA-256 hex digest of the parts, each UTF-8 encoded and NUL-terminated."""
    encoded = [part.encode("utf-8", "surrogateescape") for part in parts]
    digest = _sha256(sum(map(len, encoded)))
    for part in encoded:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


def hash_file(path: Path) -> Optional[str]:
    """SHA-256 hex digest of a file's content; None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            digest = _sha256(os.fstat(handle.fileno()).st_size)
            for chunk in iter(lambda: handle.read(_READ_CHUNK), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def stamp_file(path: Path) -> FileStamp:
    """[digest, size, mtime_ns, inode] of a regular file; [None, -1, -1, -1] if missing."""
    try:
        st = os.stat(path)
    except OSError:
        return [None, -1, -1, -1]
    if not stat.S_ISREG(st.st_mode):
        return [None, -1, -1, -1]
    return [hash_file(path), st.st_size, st.st_mtime_ns, st.st_ino]


def stamp_matches(path: str, recorded: Sequence[object]) -> bool:
    """Is the file still what `recorded` says? Stat first; hash only if the stat differs."""
    try:
        digest, size, mtime_ns, inode = recorded
    except (TypeError, ValueError):
        return False
    try:
        st = os.stat(path)
    except OSError:
        return digest is None
    if digest is None or not stat.S_ISREG(st.st_mode):
        return False
    if st.st_size == size and st.st_mtime_ns == mtime_ns and st.st_ino == inode:
        return True
    return st.st_size == size and hash_file(Path(path)) == digest


class BuildCache:
    def __init__(self, root: Optional[Path] = None):
        self.root = root or cache_root()
        self._prepared = False

    # -- the root ------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the root (0700) and its folders, or check an existing one is ours."""
        if self._prepared:
            return
        try:
            if not self.root.exists():
                # another process may create it at the same moment: then it must pass the
                # same check as any folder that existed before
                self.root.mkdir(parents=True, mode=0o700, exist_ok=True)
            self.check_private(self.root)
            for sub in SUBFOLDERS:
                (self.root / sub).mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise CytoolError(
                f"cannot use the build cache at {self.root}: {error.strerror or error}",
                hint="point $CYTOOL_CACHE_DIR (or $XDG_CACHE_HOME) at a directory you can write",
            ) from error
        self._prepared = True

    def prepare_folder(self, name: str) -> Path:
        """A sub-folder of the cache (created 0700 if missing)."""
        self.prepare()
        folder = self.root / name
        folder.mkdir(mode=0o700, exist_ok=True)
        return folder

    @staticmethod
    def check_private(path: Path) -> None:
        """CytoolError unless `path` is a folder owned by us that only we can write."""
        try:
            st = path.lstat()
        except OSError as error:
            raise CytoolError(f"cannot use the build cache at {path}: {error.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CytoolError(
                f"cannot use the build cache at {path}: not a directory",
                hint="point $CYTOOL_CACHE_DIR at a directory of your own",
            )
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            owner = "another user" if st.st_uid != os.getuid() else "you"
            raise CytoolError(
                f"refusing the build cache at {path}: it is owned by {owner} (uid {st.st_uid}) "
                f"with mode {stat.filemode(st.st_mode)}, so others could plant code that cytool would load",
                hint=f"remove it or point $CYTOOL_CACHE_DIR at a folder of your own "
                f"(cytool creates it with mode 0700); if it is yours: chmod go-w {path}",
            )

    def entry_dir(self, entry_id: str) -> Path:
        return self.root / "entries" / entry_id

    @staticmethod
    def new_entry_id() -> str:
        import secrets

        return secrets.token_hex(16)

    # -- manifests -----------------------------------------------------------------
    def _candidates(self, manifest_key: str) -> List[Dict[str, object]]:
        path = self.root / "manifests" / f"{manifest_key}.json"
        try:
            candidates = json.loads(path.read_text(encoding="utf-8")).get("candidates", [])
        except (OSError, ValueError, AttributeError):
            return []
        if not isinstance(candidates, list):
            return []
        return [
            c
            for c in candidates
            if isinstance(c, dict) and isinstance(c.get("entry"), str) and isinstance(c.get("dependencies"), dict)
        ]

    def lookup(self, manifest_key: str, need: Sequence[str] = ()) -> Optional[Tuple[str, Dict[str, object]]]:
        """The newest recorded entry whose dependencies are all unchanged and which is
        intact (see verified_record), with its build record; or None."""
        for candidate in self._candidates(manifest_key):
            deps = candidate["dependencies"]
            if all(stamp_matches(dep, stamp) for dep, stamp in deps.items()):  # type: ignore[union-attr]
                entry_id = str(candidate["entry"])
                record = self.verified_record(entry_id, need)
                return (entry_id, record) if record is not None else None
        return None

    def record(self, manifest_key: str, entry_id: str, dependencies: Mapping[str, FileStamp]) -> List[str]:
        """Make `entry_id` the newest candidate; returns the ids of earlier entries built
        from exactly the same file contents (superseded, e.g. by --force)."""
        self.prepare()
        digests = {path: stamp[0] for path, stamp in dependencies.items()}
        kept, superseded = [], []
        for candidate in self._candidates(manifest_key):
            if candidate["entry"] == entry_id:
                continue
            old = {path: stamp[0] for path, stamp in candidate["dependencies"].items()}  # type: ignore[union-attr, index]
            if old == digests:
                superseded.append(str(candidate["entry"]))
            else:
                kept.append(candidate)
        candidates = [{"entry": entry_id, "dependencies": dict(dependencies)}] + kept[: MAX_CANDIDATES - 1]
        self.atomic_write(self.root / "manifests" / f"{manifest_key}.json", json.dumps({"candidates": candidates}, indent=1))
        return superseded

    def atomic_write(self, path: Path, text: str) -> None:
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

    # -- entries -------------------------------------------------------------------
    def verified_record(self, entry_id: str, need: Sequence[str] = ()) -> Optional[Dict[str, object]]:
        """The entry's build.json if the entry is intact and safe to load, else None.

        Intact: the folder and its files owned by us and not writable by others;
        build.json readable; every file it lists present with its recorded size and
        content (stat fast path, else digest). `need`: record fields naming files that
        must be among them.
        """
        folder = self.entry_dir(entry_id)
        if not _is_private(folder):
            return None
        try:
            record = json.loads((folder / "build.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        files = record.get("files") if isinstance(record, dict) else None
        if not isinstance(files, dict) or not files:
            return None
        uid = os.getuid()
        for relative, stamp in files.items():
            path = folder / relative
            if ".." in Path(relative).parts or not stamp_matches(str(path), stamp):
                return None
            try:
                st = path.lstat()
            except OSError:
                return None
            if st.st_uid != uid or st.st_mode & 0o022:
                return None
        for field in need:
            name = record.get(field)
            if not isinstance(name, str) or name not in files:
                return None
        return record

    def stamp_entry_files(self, folder: Path) -> Dict[str, FileStamp]:
        """Digest and stat of every file in a build folder, by relative path."""
        stamps: Dict[str, FileStamp] = {}
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path.name != "build.json":
                stamps[str(path.relative_to(folder))] = stamp_file(path)
        return stamps

    @contextlib.contextmanager
    def locked(self, name: str) -> Iterator[None]:
        """Hold the lock called `name`: concurrent builders of one module wait their turn."""
        import fcntl

        self.prepare()
        with open(self.root / "locks" / f"{name}.lock", "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def new_build_dir(self) -> Path:
        import tempfile

        self.prepare()
        return Path(tempfile.mkdtemp(dir=self.root / "tmp", prefix="build-"))

    def publish(self, build_dir: Path, entry_id: str) -> Path:
        """Move a finished build (build.json written last) into place atomically."""
        final = self.entry_dir(entry_id)
        os.rename(build_dir, final)
        return final

    def remove_entry(self, entry_id: str) -> None:
        """Move an entry aside, then delete it (a process may still have its .so mapped;
        unlinked files stay valid for it)."""
        final = self.entry_dir(entry_id)
        if not final.exists():
            return
        aside = self.new_build_dir()
        try:
            os.rename(final, aside / "old")
        except OSError:
            pass
        self.discard(aside)

    def discard(self, build_dir: Path) -> None:
        import shutil

        shutil.rmtree(build_dir, ignore_errors=True)
