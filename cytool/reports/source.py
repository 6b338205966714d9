"""Which source text a report may show, and that text (read once per file, never required).

A capture is data that may come from someone else, so the file names in it are not
trusted: the text of a file is shown only when
- its name, and the file it resolves to, end in a source suffix (SOURCE_SUFFIXES);
- it is a regular file of at most MAX_SOURCE_BYTES (opened non-blocking and checked with
  fstat before reading: a FIFO, device or directory is never read);
- where the build's records give the source's sha256 (the module index, found by the
  build-ids of the modules the capture loaded: cytool.module_index), the bytes read have
  that digest. A file edited or replaced since the build is not shown against the old
  line numbers, unless the report was asked to (`show_changed`), and then it is marked.

Everything else is left out, and notes() says why, once per file.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Set

if TYPE_CHECKING:
    from cytool.analysis import Profile

# what a real capture can name a source line in: Python, Cython and C/C++ sources
SOURCE_SUFFIXES = (".py", ".pyw", ".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".hxx")
MAX_SOURCE_BYTES = 16 * 1024 * 1024

VERIFIED = "verified"  # the build recorded the file's sha256, and the file has it
UNVERIFIED = "unverified"  # no build record names the file (e.g. a Python file): shown
CHANGED = "changed"  # the file differs from the one built; shown only with show_changed
REFUSED = "refused"  # not something a capture can name source lines in: never read
MISSING = "missing"  # cannot be read (deleted, no permission)


@dataclass(frozen=True)
class SourceStatus:
    """What a report may do with one file: `state` (one of the constants above), whether
    its text is `shown`, and `reason`, a phrase for the report ("" when nothing to say)."""

    state: str
    shown: bool
    reason: str = ""


def display_name(text: str) -> str:
    """`text` with control characters (C0, DEL, C1) replaced by `\\xNN` escapes: what a
    terminal or a page may print of a name or line that came from a capture."""
    if text.isprintable() or not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text):
        return text
    return "".join(
        c if c == "\t" or not (ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0) else f"\\x{ord(c):02x}" for c in text
    )


def build_digests(profile: "Profile") -> Dict[str, Set[str]]:
    """{source path: the sha256 digests it had when the modules the capture loaded were
    built}, from the module index entries of the capture's build-ids ({} when the build
    cache is unavailable or unsafe: its records are then not trusted)."""
    from cytool.cache import BuildCache
    from cytool.errors import CytoolError
    from cytool.module_index import lookup

    build_ids = {o.build_id for o in getattr(profile, "objects", ()) if o.build_id}
    if not build_ids:
        return {}
    cache = BuildCache()
    try:
        if not cache.root.is_dir():
            return {}
        cache.check_private(cache.root)
    except (CytoolError, OSError):
        return {}
    digests: Dict[str, Set[str]] = {}
    for build_id in sorted(build_ids):
        entry = lookup(build_id, cache)
        sources = entry.get("sources") if entry else None
        if not isinstance(sources, dict):
            continue
        for path, digest in sources.items():
            if isinstance(path, str) and isinstance(digest, str) and digest:
                digests.setdefault(os.path.normpath(path), set()).add(digest)
    return digests


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _pseudo(file: str) -> bool:
    """Python's names for code without a file: `<string>`, `<frozen runpy>`, `<stdin>`."""
    return file.startswith("<") and file.endswith(">")


class SourceCache:
    """The text of the source files a report shows, under the rules at the top of this
    module. `digests`: {path: sha256 digests} the files must have (build_digests(profile)
    when a profile is given); `show_changed`: show a changed file's text anyway (marked)."""

    def __init__(
        self,
        profile: Optional["Profile"] = None,
        *,
        show_changed: bool = False,
        digests: Optional[Mapping[str, Iterable[str]]] = None,
    ) -> None:
        if digests is None:
            digests = build_digests(profile) if profile is not None else {}
        self._digests = {os.path.normpath(p): set(d) for p, d in digests.items()}
        self.show_changed = show_changed
        self._files: Dict[str, Optional[List[str]]] = {}
        self._status: Dict[str, SourceStatus] = {}

    def _read(self, file: str) -> None:
        status, text = self._load(file)
        self._status[file] = status
        self._files[file] = text.splitlines() if status.shown and text is not None else None

    def _load(self, file: str):  # -> Tuple[SourceStatus, Optional[str]]
        if not file or _pseudo(file):
            return SourceStatus(MISSING, False), None
        if "\0" in file:
            return SourceStatus(REFUSED, False, "the name holds a NUL byte: not a file a capture can name"), None
        if _suffix(file) not in SOURCE_SUFFIXES:
            return SourceStatus(REFUSED, False, f"not a source file ({_suffix(file) or 'no suffix'}): never read"), None
        try:
            real = os.path.realpath(file)
        except (OSError, ValueError):
            return SourceStatus(MISSING, False, "cannot be read"), None
        if _suffix(real) not in SOURCE_SUFFIXES:
            return SourceStatus(REFUSED, False, f"a link to {real}, not a source file: never read"), None
        try:
            fd = os.open(file, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except (OSError, ValueError) as error:
            why = getattr(error, "strerror", None) or "cannot be opened"
            return SourceStatus(MISSING, False, f"cannot be read ({why.lower()})"), None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, a device?)"
                return SourceStatus(REFUSED, False, f"{kind}: never read"), None
            if info.st_size > MAX_SOURCE_BYTES:
                return SourceStatus(REFUSED, False, f"larger than {MAX_SOURCE_BYTES >> 20} MiB: not read"), None
            chunks = []
            size = 0
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_SOURCE_BYTES:
                    return SourceStatus(REFUSED, False, f"larger than {MAX_SOURCE_BYTES >> 20} MiB: not read"), None
                chunks.append(chunk)
        except OSError as error:
            return SourceStatus(MISSING, False, f"cannot be read ({(error.strerror or 'error').lower()})"), None
        finally:
            os.close(fd)
        data = b"".join(chunks)
        text = data.decode("utf-8", errors="replace")
        expected = self._digests.get(os.path.normpath(file))
        if not expected:
            return SourceStatus(UNVERIFIED, True), text
        if hashlib.sha256(data).hexdigest() in expected:
            return SourceStatus(VERIFIED, True), text
        link = " (it is now a link to another file)" if os.path.islink(file) else ""
        if self.show_changed:
            return SourceStatus(CHANGED, True, f"changed since the module was built{link}; shown as it is now "
                                               "(--show-changed-sources): its lines may not match the figures"), text
        return SourceStatus(CHANGED, False, f"changed since the module was built{link} (its sha256 differs from the "
                                            "one recorded by the build); its text is not shown against the old line "
                                            "numbers (--show-changed-sources shows it, marked as changed)"), None

    def status(self, file: str) -> SourceStatus:
        """What may be shown of `file` (reads it on first use)."""
        if file not in self._status:
            self._read(file)
        return self._status[file]

    def lines(self, file: str) -> Optional[List[str]]:
        """All lines of `file` (without newlines), or None when it is not shown."""
        if file not in self._files:
            self._read(file)
        return self._files[file]

    def line(self, file: str, number: int) -> str:
        """The stripped text of line `number` (1-based), "" when unknown or not shown."""
        lines = self.lines(file) if file else None
        if not lines or not 1 <= number <= len(lines):
            return ""
        return lines[number - 1].strip()

    def changed(self, file: str) -> bool:
        """Whether `file` is shown although it changed since the build (--show-changed-sources)."""
        s = self.status(file)
        return s.shown and s.state == CHANGED

    def notes(self, files: Optional[Iterable[str]] = None) -> List[str]:
        """One line per file (of `files`, or of those read so far) whose text is left out
        or shown changed, saying why."""
        wanted = list(dict.fromkeys(files)) if files is not None else list(self._status)
        notes = []
        for file in wanted:
            s = self.status(file)
            if s.reason and s.state != MISSING:
                shown = display_name(file)
                notes.append(f"{shown}: {s.reason}" if s.state != REFUSED else f"{shown}: source text not shown: {s.reason}")
        return notes


def capture_files(profile: "Profile") -> List[str]:
    """The files the capture names for the report's source lines (.pyx and Python lines)."""
    return list(dict.fromkeys(l.file for l in profile.lines() if l.kind in ("pyx", "python") and l.file))
