"""Which source text a report may show, and that text (read once per file, never required).

A capture is data that may come from someone else, so the file names in it are not
trusted: the text of a file is shown only when
- its name, and the file it resolves to, end in a source suffix (SOURCE_SUFFIXES);
- it is a regular file of at most MAX_SOURCE_BYTES (opened non-blocking and checked with
  fstat before reading: a FIFO, device or directory is never read);
- where the build's records give the source's sha256 (the module index, found by the
  build-ids of the modules the capture loaded: cytool.module_index), the bytes read have
  that digest. A file edited or replaced since the build is not shown against the old
  line numbers: its lines with code are quoted as they were built, from the comments of
  the build's generated C file (while that file is as built), marked "as built"; or, when
  the report was asked to (`show_changed`), shown as it is now, marked "changed".

A relative name (the DWARF of a build run in a project folder says `pkg/mod.pyx`) is the
recorded source it names, when the build records name exactly one. Everything else is
left out, and notes() says why, once per file.
"""
from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, Iterable, List, Mapping, Optional, Set, Tuple

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


@dataclass
class BuildRecords:
    """What the builds of the modules a capture loaded recorded about their sources:
    `digests` {source path: sha256 digests it had when built} and `c_files` {source path:
    the generated C files of those builds, whose comments quote each line as built}."""

    digests: Dict[str, Set[str]] = field(default_factory=dict)
    # source path -> [(C file, its sha256 when built, or None for a C file inside a
    # cache entry, which never changes)]
    c_files: Dict[str, List[Tuple[str, Optional[str]]]] = field(default_factory=dict)


def build_records(profile: "Profile") -> BuildRecords:
    """The module index entries of the capture's build-ids (cytool.module_index), as
    BuildRecords (empty when the build cache is missing or unsafe: its records are then
    not trusted)."""
    from cytool.cache import BuildCache
    from cytool.errors import CytoolError
    from cytool.module_index import lookup

    records = BuildRecords()
    build_ids = {o.build_id for o in getattr(profile, "objects", ()) if o.build_id}
    if not build_ids:
        return records
    cache = BuildCache()
    try:
        if not cache.root.is_dir():
            return records
        cache.check_private(cache.root)
    except (CytoolError, OSError):
        return records
    for build_id in sorted(build_ids):
        entry = lookup(build_id, cache)
        sources = entry.get("sources") if entry else None
        if not entry or not isinstance(sources, dict):
            continue
        c_file = entry.get("c_file")
        c_digest = entry.get("c_digest") if isinstance(entry.get("c_digest"), str) else None
        if c_digest is None and entry.get("built_by") != "cytool build":
            c_file = None  # a C file in the project, perhaps regenerated since: not quoted
        for path, digest in sources.items():
            if not isinstance(path, str):
                continue
            key = os.path.normpath(path)
            if isinstance(digest, str) and digest:
                records.digests.setdefault(key, set()).add(digest)
            if isinstance(c_file, str) and c_file:
                records.c_files.setdefault(key, []).append((c_file, c_digest))
    return records


def build_digests(profile: "Profile") -> Dict[str, Set[str]]:
    """{source path: the sha256 digests it had when the modules the capture loaded were
    built} (build_records(profile).digests)."""
    return build_records(profile).digests


_C_POSITION = re.compile(r'^\s*/\* "(?P<file>[^"\n]+)":(?P<line>[0-9]+)$')
_C_MARK = re.compile(r"\s+# <{14}$")


def lines_as_built(c_text: str) -> Dict[Tuple[str, int], str]:
    """{(source as Cython names it, line): the line's text} from the source-position
    comments Cython writes into its C file (`/* "mod.pyx":12` then the quoted lines, the
    line itself marked `# <<<<<<<<<<<<<<`): the text of every line that has code, as it
    was when the module was built."""
    found: Dict[Tuple[str, int], str] = {}
    where: Optional[Tuple[str, int]] = None
    for text in c_text.splitlines():
        match = _C_POSITION.match(text)
        if match:
            where = (match.group("file"), int(match.group("line")))
            continue
        if where is None:
            continue
        if not text.startswith(" *") or text.startswith(" */") or text.startswith("*/"):
            where = None
            continue
        if _C_MARK.search(text):
            found.setdefault(where, _C_MARK.sub("", text[3:]).replace("*[/]", "*/"))
            where = None
    return found


def _suffix(path: str) -> str:
    return os.path.splitext(path)[1].lower()


def _pseudo(file: str) -> bool:
    """Python's names for code without a file: `<string>`, `<frozen runpy>`, `<stdin>`."""
    return file.startswith("<") and file.endswith(">")


def _read_source(file: str) -> Tuple[SourceStatus, Optional[bytes]]:
    """The bytes of `file` if the rules on names and kinds of file allow reading it (see
    the top of this module), else None; the status says why not."""
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
    return SourceStatus(UNVERIFIED, True), b"".join(chunks)


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
        records = build_records(profile) if profile is not None and digests is None else BuildRecords()
        if digests is None:
            digests = records.digests
        self._digests = {os.path.normpath(p): set(d) for p, d in digests.items()}
        self._c_files = records.c_files
        self.show_changed = show_changed
        self._files: Dict[str, Optional[List[str]]] = {}
        self._status: Dict[str, SourceStatus] = {}
        self._built: Dict[str, Dict[int, str]] = {}

    def _read(self, file: str) -> None:
        status, text = self._load(file)
        self._status[file] = status
        self._files[file] = text.splitlines() if status.shown and text is not None else None

    def _resolve(self, file: str) -> str:
        """The path to read for `file`: a relative name (DWARF of a build run in a project
        folder: `pkg/mod.pyx`) is the one source the build records name that ends so;
        otherwise `file` itself."""
        if not file or os.path.isabs(file) or _pseudo(file):
            return file
        tail = "/" + os.path.normpath(file).lstrip("./")
        matches = [p for p in set(self._digests) | set(self._c_files) if p.endswith(tail)]
        return matches[0] if len(matches) == 1 else file

    def _load(self, name: str) -> Tuple[SourceStatus, Optional[str]]:
        file = self._resolve(name)
        status, data = _read_source(file)
        if data is None:
            return status, None
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
        self._built[name] = self._quoted_by_build(file)
        built = (" (the lines with code are shown as they were built, from the build's generated C file, marked "
                 "\"as built\")" if self._built[name] else "")
        return SourceStatus(CHANGED, False, f"changed since the module was built{link} (its sha256 differs from the "
                                            "one recorded by the build); its text is not shown against the old line "
                                            f"numbers{built}; --show-changed-sources shows it as it is now, marked as "
                                            "changed"), None

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

    def _quoted_by_build(self, file: str) -> Dict[int, str]:
        """{line: text} of `file` quoted by the comments of its build's generated C file
        (only a C file as it was built: see BuildRecords.c_files)."""
        found: Dict[int, str] = {}
        for c_file, c_digest in self._c_files.get(os.path.normpath(file), []):
            data = _read_source(c_file)[1]
            if data is None or (c_digest is not None and hashlib.sha256(data).hexdigest() != c_digest):
                continue
            for (named, number), line in lines_as_built(data.decode("utf-8", "replace")).items():
                if file == named or file.endswith("/" + named.lstrip("./")):
                    found.setdefault(number, line)
            if found:
                break
        return found

    def built_lines(self, file: str) -> Dict[int, str]:
        """{line: text} of `file` as it was when its module was built, for a file that
        changed since and is not shown: read from the comments of the build's generated C
        file (lines with code only; {} when there is no such record)."""
        self.status(file)
        return self._built.get(file, {})

    def line_as_built(self, file: str, number: int) -> str:
        """The stripped text of line `number` as built (see built_lines), "" when unknown."""
        return self.built_lines(file).get(number, "").strip() if file else ""

    def shown_line(self, file: str, number: int) -> Tuple[str, str]:
        """(text, mark) of line `number` for a report: the stripped line and "" when the
        file is shown as built; "changed" when it is shown although changed
        (--show-changed-sources); the line as built and "as built" for a changed file not
        shown (when the build's C file has it); ("", "") otherwise."""
        text = self.line(file, number)
        if text:
            return text, "changed" if self.changed(file) else ""
        built = self.line_as_built(file, number)
        return (built, "as built") if built else ("", "")

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
