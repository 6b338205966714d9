"""Cython modules built without cytool: no debug XML, usually no `#line` directives.

A module from a wheel or a plain `setup.py build_ext --inplace` still tells a lot:
- its symbols name its Cython functions: `__pyx_pf_3app_3api_7Counter_2add` is the body
  of `app.api.Counter.add` (`__pyx_pw_...` its Python wrapper, `__pyx_f_...` a cdef
  function, `__pyx_gb_...` a generator's body), read from the ELF file
  (cytool_gdb_elf) since gdb cannot list minimal symbols;
- its generated C file, when it can be found (the DWARF compilation directory + CU
  name, beside the module, or in the project above a build tree), holds a position
  comment (`/* "app/api.pyx":12`, the .pyx text below it) before the code of every
  statement: the C lines up to the next comment belong to that `.pyx` line, which is
  what Cython's debug XML would have said too.

`ForeignModule` turns that into the same shape as a `Module` read from the XML
(functions with qualified names, C extents, the `.pyx` lines each one covers), so
cy-break, cy-bt and $cy_lineno work on it; `c_lines` says that the line table speaks
C (no `#line`), so `.pyx` lines are found through the comments (`pyx_position`,
`c_lines_of`). Locals are not in there: they come from the frame's `__pyx_v_*`
variables (cytool_gdb_names). Standard library only; nothing here touches gdb.
"""
from __future__ import annotations

import bisect
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import cytool_gdb_elf as elf
from cytool_gdb_debuginfo import (Function, Module, StatementLine, c_function_extents, c_name,
                                  prefer_generator_bodies)

# The prefixes Cython gives the C functions of a module (Cython/Compiler/Naming.py).
BODY = "__pyx_pf_"  # a def function's body
WRAPPER = "__pyx_pw_"  # its Python wrapper: argument parsing, then a call of the body
CDEF = "__pyx_f_"  # a cdef function (and a cpdef function's C entry)
GENERATOR = "__pyx_gb_"  # a generator's, coroutine's or async function's body
LAMBDA = "__pyx_lambda_funcdef_"
MODULE_EXEC = "__pyx_pymod_exec_"
GETTER = "__pyx_getprop_"  # a property's (or cdef public attribute's) wrapper: calls its __get__
SETTER = "__pyx_setprop_"  # ... its __set__ (and __del__)
_KINDS = (LAMBDA, BODY, WRAPPER, CDEF, GENERATOR, GETTER, SETTER)
_WRAPPERS = (WRAPPER, GETTER, SETTER)

_IDENTIFIER = re.compile(r"[A-Za-z_]\w*$")
_POSITION = re.compile(r'^\s*/\* "([^"]+)":(\d+)$')
_MODULE_NAME_DEFINE = re.compile(r'^#define __Pyx_MODULE_NAME "([\w.]+)"', re.M)
_DEFINITION = re.compile(r"\b((?:__pyx_(?:pf|pw|f|gb|getprop|setprop)_|__pyx_lambda_funcdef_|__pyx_pymod_exec_)\w+)\(")
_DEF_NAME = re.compile(r"^\s*(?:async\s+)?(?:def|cdef|cpdef)\b[^(#]*?\b([A-Za-z_]\w*)\s*\(")
_CLASS_SYMBOL = re.compile(r"^__pyx_(?:tp_new|tp_dealloc|type|obj|vtabstruct|vtable)_(\w+)$")
SOURCE_SUFFIXES = (".pyx", ".pxi", ".pxd", ".py")


# -- names ------------------------------------------------------------------------------


def mangled_prefix(module_name: str) -> str:
    """`3app_3api_` for `app.api`: how Cython starts the C names of a module's functions."""
    return "".join(f"{len(part)}{part}_" for part in module_name.split("."))


def parses(tail: str) -> List[Tuple[Tuple[str, ...], str]]:
    """Every reading of a C name's tail (after the module prefix) as Cython writes it,
    scopes then an optional counter then the name: `7Counter_2add` is (("Counter",),
    "add") or ((), "Counter_2add") - each scope is `<length><name>_`, and the counter
    (digits) and a scope's length cannot be told apart by syntax alone."""
    found: List[Tuple[Tuple[str, ...], str]] = []

    def walk(position: int, scopes: Tuple[str, ...]) -> None:
        digits = re.match(r"\d+", tail[position:])
        start = position + (len(digits.group(0)) if digits else 0)
        if digits:
            length = int(digits.group(0))
            end = start + length
            scope = tail[start:end]
            if 0 < length and end + 1 < len(tail) and tail[end] == "_" and _IDENTIFIER.match(scope) \
                    and scope.strip("_"):
                walk(end + 1, scopes + (scope,))
        name = tail[start:]
        if _IDENTIFIER.match(name):
            found.append((scopes, name))

    walk(0, ())
    return found


def _score(reading: Tuple[Tuple[str, ...], str], known_scopes: Set[str]) -> int:
    scopes, name = reading
    score = sum(2 if scope in known_scopes else -1 for scope in scopes)
    if re.search(r"_\d+[A-Za-z_]", name):
        score -= 3  # a name with a mangled scope inside it is another reading's scope
    return score


def best_reading(readings: Sequence[Tuple[Tuple[str, ...], str]], known_scopes: Set[str],
                 hint: Optional[str] = None) -> Tuple[Tuple[str, ...], str]:
    """The reading to show: the one naming the function `hint` (its def line says so),
    else the one whose scopes are classes or functions the module is known to have."""
    if hint:
        named = [r for r in readings if r[1] == hint]
        if named:
            readings = named
    return max(readings, key=lambda r: (_score(r, known_scopes), -len(r[0])))


def split_cname(cname: str, prefix: str) -> Optional[Tuple[str, str]]:
    """(kind prefix, tail after the module prefix) of a Cython function's C name, or None."""
    for kind in _KINDS:
        if cname.startswith(kind):
            rest = cname[len(kind):]
            if rest.startswith(prefix):
                return kind, rest[len(prefix):]
            if kind == LAMBDA:
                return kind, rest  # lambdas are not prefixed with their module
            return None
    return None


def module_name_from_symbols(names: Iterable[str], short: str) -> Optional[str]:
    """`app.api` from the `__pyx_module_is_main_app__api` variable every module has."""
    for name in names:
        if name.startswith("__pyx_module_is_main_"):
            dotted = name[len("__pyx_module_is_main_"):].replace("__", ".")
            if dotted == short or dotted.endswith("." + short):
                return dotted
    return None


def module_name_from_path(so_path: str) -> str:
    """`pkg.sub.mod` for `.../pkg/sub/mod.cpython-311-x86_64-linux-gnu.so` (directories
    holding an `__init__` file are packages)."""
    directory, file_name = os.path.split(os.path.abspath(so_path))
    parts = [file_name.split(".", 1)[0]]
    for _ in range(16):
        try:
            entries = os.listdir(directory)
        except OSError:
            break
        if not any(e.startswith("__init__.") for e in entries):
            break
        parts.insert(0, os.path.basename(directory))
        directory = os.path.dirname(directory)
    return ".".join(parts)


# -- the generated C file ---------------------------------------------------------------


class CFile:
    """What the generated C file says without the XML: Cython's position comments (which
    `.pyx` line the C lines below each one belong to, with that line's text), the
    module name, the functions it defines and whether it has `#line` directives."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
        found = _MODULE_NAME_DEFINE.search(text)
        self.module_name = found.group(1) if found else None
        self.has_line_directives = "\n#line " in text
        lines = text.split("\n")
        self.marker_lines: List[int] = []  # 1-based C line of each position comment
        self.markers: List[Tuple[str, int]] = []  # (source as written in the comment, line)
        self.texts: Dict[Tuple[str, int], str] = {}  # (source, line): the line's text, from the comment
        self.defined: List[str] = []
        for index, line in enumerate(lines):
            if line.lstrip().startswith('/* "'):
                match = _POSITION.match(line)
                if match:
                    key = (match.group(1), int(match.group(2)))
                    self.marker_lines.append(index + 1)
                    self.markers.append(key)
                    if key not in self.texts:
                        self.texts[key] = _marked_text(lines, index + 1)
                    continue
            if line and not line[0].isspace() and "(" in line and line[0] not in "#/*}":
                match = _DEFINITION.search(line)
                if match and not line.rstrip().endswith(";") and "/* proto */" not in line:
                    self.defined.append(match.group(1))

    def marker_at(self, c_line: int) -> Optional[Tuple[str, int]]:
        """The (source, line) whose code C line `c_line` is: the last comment above it."""
        index = bisect.bisect_right(self.marker_lines, c_line) - 1
        return self.markers[index] if index >= 0 else None

    def sources(self) -> List[str]:
        return list(dict.fromkeys(source for source, _ in self.markers))


_MARK = "# <<<<<<<<<<<<<<"


def _marked_text(lines: List[str], start: int) -> str:
    """The source line a position comment points at: the one ending `# <<<<<<<<<<<<<<`."""
    for index in range(start, min(start + 12, len(lines))):
        line = lines[index]
        if line.lstrip().startswith("*/"):
            break
        if line.rstrip().endswith(_MARK):
            text = line[3:] if line.startswith(" * ") else line.lstrip(" *")
            return text.rstrip()[:-len(_MARK)].rstrip()
    return ""


def find_c_file(so_path: str, module_name: str, dwarf_paths: Sequence[str] = ()) -> Optional[str]:
    """The generated C (or C++) file of a module: where its DWARF says it was compiled,
    beside the module, or in a project folder above it (`build/lib.*/pkg/mod.so` with
    `pkg/mod.c`, also under `src/`). The first that defines the module's PyInit wins."""
    short = module_name.rsplit(".", 1)[-1]
    package = module_name.split(".")[:-1]
    candidates: List[str] = [p for p in dwarf_paths if p]
    directory = os.path.dirname(os.path.abspath(so_path))
    for name in (short + ".c", short + ".cpp"):
        candidates.append(os.path.join(directory, name))
    above = directory
    for _ in range(len(package) + 4):
        for base in (above, os.path.join(above, "src")):
            for name in (short + ".c", short + ".cpp"):
                candidates.append(os.path.join(base, *package, name))
        parent = os.path.dirname(above)
        if parent == above:
            break
        above = parent
    seen = set()
    for candidate in candidates:
        if candidate in seen:
            continue
        seen.add(candidate)
        if os.path.isfile(candidate) and _defines_module(candidate, short):
            return candidate
    return None


def _defines_module(path: str, short: str) -> bool:
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError:
        return False
    return (b"PyInit_" + short.encode()) in text and b"__pyx_" in text


def resolve_source(written: str, anchors: Sequence[str]) -> Optional[str]:
    """The real path of a source named in a position comment (`app/api.pyx`, relative to
    where Cython ran): tried against each anchor folder and the folders above it."""
    if os.path.isabs(written):
        return written if os.path.isfile(written) else None
    depth = written.count("/") + 4
    for anchor in anchors:
        if not anchor:
            continue
        directory = os.path.abspath(anchor)
        for _ in range(depth):
            candidate = os.path.join(directory, written)
            if os.path.isfile(candidate):
                return os.path.normpath(candidate)
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    return None


# -- the module -------------------------------------------------------------------------


class ForeignFunction(Function):
    """A Cython function known from its C names (and the C file's comments, if found)."""

    def __init__(self, module: "ForeignModule", cname: str, qualified_name: str, name: str,
                 aliases: Set[str]) -> None:  # noqa: super().__init__ reads an XML element
        self.module = module
        self.name = name
        self.cname = cname
        self.pf_cname = ""
        self.qualified_name = qualified_name
        self.lineno = 0
        self.is_module_init = cname.startswith(MODULE_EXEC)
        self.locals = {}
        self.arguments = []
        self.step_into = []
        self.lines = {}
        self.source = None
        self.aliases = aliases  # every qualified name the C name can be read as
        self.wrappers: List[str] = []  # C names of its Python wrappers (frames of the same function)
        self.locals_read = False  # locals are filled in from a frame's variables (cytool_gdb_names)


class ForeignModule(Module):
    """A Cython module without debug XML, described from its symbols and its C file."""

    foreign = True

    def __init__(self, so_path: str, name: str, symbols: Iterable[str], c_file: Optional[CFile],
                 anchors: Sequence[str] = ()) -> None:  # noqa: super().__init__ reads the XML
        self.so_path = os.path.realpath(so_path)
        self.stamp = _stamp(self.so_path)
        self.xml_path = ""
        self.name = name
        self.c_file = c_file
        self.c_filename = c_file.path if c_file else ""
        self.c_lines = bool(c_file) and not c_file.has_line_directives  # the line table speaks C
        self.globals = {}
        self._classes = None
        self.notes: List[str] = []
        symbols = [c_name(s) for s in symbols]
        self._sources: Dict[str, str] = {}  # source as the comments write it -> path used here
        if c_file is not None:
            anchors = [os.path.dirname(c_file.path), os.path.dirname(self.so_path), *anchors]
            for written in c_file.sources():
                self._sources[written] = resolve_source(written, anchors) or written
        main = [self._sources[w] for w in self._sources if os.path.basename(w).split(".")[0] == self.short_name
                and w.endswith(SOURCE_SUFFIXES)]
        self.filename = main[0] if main else ""
        self.c_extents: Dict[str, Tuple[int, int]] = {}
        self.functions = self._functions(set(symbols) | set(c_file.defined if c_file else ()), symbols)
        self.by_cname = {}
        for function in self.functions:
            self.by_cname[function.cname] = function
            for wrapper in function.wrappers:
                self.by_cname.setdefault(wrapper, function)
        self.line_map = {}
        if c_file is not None:
            self._lines_from_comments(c_file)

    # -- functions from C names --------------------------------------------------------------

    def _functions(self, cnames: Set[str], symbols: Sequence[str]) -> List[ForeignFunction]:
        prefix = mangled_prefix(self.name)
        split: Dict[str, Tuple[str, str]] = {}
        for cname in cnames:
            parts = split_cname(cname, prefix)
            if parts is not None:
                split[cname] = parts
        known_scopes = self._known_scopes(split, symbols, prefix)
        self._prefix, self._known = prefix, known_scopes
        hints = self._def_names() if self.c_file is not None else {}
        readings: Dict[str, Tuple[Tuple[str, ...], str]] = {}
        all_readings: Dict[str, List[Tuple[Tuple[str, ...], str]]] = {}
        for cname, (kind, tail) in split.items():
            options = parses(tail)
            if kind in (GETTER, SETTER):  # `3Vec_x`: the property x of Vec
                method = "__get__" if kind == GETTER else "__set__"
                options = [(scopes + (name,), method) for scopes, name in options]
            if not options:
                continue
            all_readings[cname] = options
            readings[cname] = best_reading(options, known_scopes, hints.get(cname) if kind not in _WRAPPERS else None)
        functions: Dict[str, ForeignFunction] = {}
        by_key: Dict[Tuple[Tuple[str, ...], str], ForeignFunction] = {}
        for cname in sorted(readings, key=lambda c: (not c.startswith(CDEF), c)):  # a cpdef's C body first
            kind = split[cname][0]
            if kind in _WRAPPERS:
                continue
            scopes, name = readings[cname]
            if kind in (GENERATOR, LAMBDA):
                name = hints.get(cname) or ("lambda" if kind == LAMBDA else "generator")
            key = (scopes, name)
            if kind == BODY and key in by_key and by_key[key].cname.startswith(CDEF):
                by_key[key].wrappers.append(cname)  # a cpdef function's Python-visible body calls its C one
                continue
            aliases = {".".join(s + (n,)) for s, n in all_readings[cname]} | {".".join(scopes + (name,))}
            function = ForeignFunction(self, cname, ".".join((self.name,) + scopes + (name,)), name, aliases)
            functions[cname] = function
            if kind != GENERATOR:
                by_key.setdefault(key, function)
        for cname, (kind, _) in split.items():
            if kind not in _WRAPPERS or cname not in readings:
                continue
            scopes, name = readings[cname]
            if name.startswith(LAMBDA):  # a lambda's wrapper names the scope the lambda is in
                target = functions.get(name)
                if target is not None:
                    target.qualified_name = ".".join((self.name,) + scopes + ("lambda",))
                    target.aliases.add(".".join(scopes + ("lambda",)))
                    target.wrappers.append(cname)
                continue
            target = by_key.get((scopes, name))
            if target is None:
                target = next((by_key[k] for k in [(s, n) for s, n in all_readings[cname]] if k in by_key), None)
            if target is not None:
                target.wrappers.append(cname)
            else:  # its body was inlined into it and has no symbol of its own: the wrapper stands for it
                aliases = {".".join(s + (n,)) for s, n in all_readings[cname]} | {".".join(scopes + (name,))}
                function = ForeignFunction(self, cname, ".".join((self.name,) + scopes + (name,)), name, aliases)
                functions[cname] = function
                by_key[(scopes, name)] = function
        short = self.short_name
        for cname in cnames:
            if cname == MODULE_EXEC + short:
                init = ForeignFunction(self, cname, self.name, short, set())
                init.lineno = 1
                functions[cname] = init
        return list(functions.values())

    def _known_scopes(self, split: Dict[str, Tuple[str, str]], symbols: Sequence[str], prefix: str) -> Set[str]:
        """Names that are surely classes or enclosing functions: cdef classes (their
        type's symbols), functions with one reading, scopes several C names share."""
        known: Set[str] = set()
        for symbol in symbols:
            match = _CLASS_SYMBOL.match(symbol)
            if match and match.group(1).startswith(prefix):
                known.add(match.group(1)[len(prefix):])
        if self.c_file is not None:
            for struct in re.findall(r"__pyx_obj_" + re.escape(prefix) + r"(\w+)", " ".join(self.c_file.defined)):
                known.add(struct)
        counts: Dict[str, int] = {}
        for cname, (_, tail) in split.items():
            options = parses(tail)
            if len(options) == 1 and not options[0][0]:
                known.add(options[0][1])
            for scope in {scope for reading in options for scope in reading[0]}:
                counts[scope] = counts.get(scope, 0) + 1
        known.update(scope for scope, count in counts.items() if count >= 2)
        return known

    def _def_names(self) -> Dict[str, str]:
        """{C name: the name its def line defines}, from the position comment above each
        function's definition in the C file (the def line's text)."""
        assert self.c_file is not None
        extents = c_function_extents(self.c_file.path, self.c_file.defined)
        self.c_extents = extents
        names = {}
        for cname, (first, _) in extents.items():
            marker = self.c_file.marker_at(first)
            if marker is None:
                continue
            match = _DEF_NAME.match(self.c_file.texts.get(marker, ""))
            if match:
                names[cname] = match.group(1)
        return names

    def describes(self, so_path: str) -> bool:
        """Whether this description is of that shared object as it is now (not a rebuild)."""
        return os.path.realpath(so_path) == self.so_path and _stamp(self.so_path) == self.stamp

    @property
    def mangled_prefix(self) -> str:
        return mangled_prefix(self.name)

    def function_for(self, cname: str) -> Optional[ForeignFunction]:
        """The function a C name of this module runs, also one known only now (the body
        of a def function inlined into its wrapper: gdb names its inline frame after it,
        but it has no symbol of its own)."""
        cname = c_name(cname)
        known = self.by_cname.get(cname)
        if known is not None or not cname.startswith(BODY):
            return known
        parts = split_cname(cname, self._prefix)
        options = parses(parts[1]) if parts is not None else []
        if not options:
            return None
        scopes, name = best_reading(options, self._known)
        for function in self.functions:
            if function.qualified_name == ".".join((self.name,) + scopes + (name,)):
                self.by_cname[cname] = function
                return function
        return None

    def cdef_cname(self, spec: str) -> Optional[str]:
        """The C name a cdef function `spec` (`pkg.mod.helper`, `mod.Class.method`) has
        in this module: cdef names carry no counter, so they can be written forward (for a
        function inlined everywhere, which has no symbol to read)."""
        for prefix in (self.name + ".", self.short_name + "."):
            if spec.startswith(prefix):
                parts = spec[len(prefix):].split(".")
                if all(_IDENTIFIER.match(part) for part in parts):
                    return CDEF + self._prefix + "".join(f"{len(p)}{p}_" for p in parts[:-1]) + parts[-1]
        return None

    def adopt(self, cname: str) -> ForeignFunction:
        """A function learnt later (gdb's debug information knows it; see cdef_cname)."""
        known = self.by_cname.get(cname)
        if known is not None:
            return known
        options = parses(split_cname(cname, self._prefix)[1]) if split_cname(cname, self._prefix) else []
        scopes, name = best_reading(options, self._known) if options else ((), cname)
        function = ForeignFunction(self, cname, ".".join((self.name,) + scopes + (name,)), name,
                                   {".".join(s + (n,)) for s, n in options})
        extent = self.c_extents.get(cname)
        if extent is not None and self.c_file is not None:
            for c_line in range(extent[0], extent[1] + 1):
                position = self.pyx_position(c_line)
                if position is not None:
                    function.lines.setdefault(position[0], set()).add(position[1])
            function.source = self._def_file(function)
        self.functions.append(function)
        self.by_cname[cname] = function
        return function

    # -- lines from the position comments ---------------------------------------------------

    def _lines_from_comments(self, c_file: CFile) -> None:
        spans = sorted((extent[0], extent[1], cname) for cname, extent in self.c_extents.items()
                       if cname in self.by_cname and self.by_cname[cname].cname == cname)
        for first, last, cname in spans:
            function = self.by_cname[cname]
            for c_line in range(first, last + 1):
                marker = c_file.marker_at(c_line)
                if marker is None:
                    continue
                path = self._sources.get(marker[0], marker[0])
                self.line_map.setdefault(path, {}).setdefault(marker[1], []).append(c_line)
                function.lines.setdefault(path, set()).add(marker[1])
            header = c_file.marker_at(first)
            if header is not None and not function.is_module_init:
                function.lineno = header[1]
        for function in self.functions:
            function.source = self._def_file(function)
            if function.is_lambda:
                self._name_lambda(function)

    def _name_lambda(self, function: ForeignFunction) -> None:
        """A lambda without a wrapper naming its scope: the function whose code holds its line."""
        if function.qualified_name != f"{self.name}.lambda" or function.source is None:
            return
        hosts = [f for f in self.functions if f is not function and not f.is_module_init and not f.is_lambda
                 and f.covers(function.source, function.lineno) and f.lineno < function.lineno]
        if hosts:
            host = max(hosts, key=lambda f: f.lineno)
            function.qualified_name = host.qualified_name + ".lambda"
            function.aliases.add(host.display_name + ".lambda")

    def pyx_position(self, c_line: int) -> Optional[Tuple[str, int]]:
        """The (.pyx path, line) that C line `c_line` of the C file belongs to."""
        if self.c_file is None:
            return None
        marker = self.c_file.marker_at(c_line)
        if marker is None:
            return None
        return self._sources.get(marker[0], marker[0]), marker[1]

    def c_lines_of(self, function: Function, path: str, line: int) -> List[int]:
        """The C lines of `function` whose code is path:line, in C order."""
        extent = self.c_extents.get(function.cname)
        lines = self.line_map.get(path, {}).get(line, [])
        if extent is None:
            return []
        return sorted(c for c in lines if extent[0] <= c <= extent[1])

    def source_text(self, path: str, line: int) -> str:
        """A line's text as the position comment quotes it (for a .pyx that is not here)."""
        if self.c_file is None:
            return ""
        for written, used in self._sources.items():
            if used == path or written == path:
                return self.c_file.texts.get((written, line), "")
        return ""

    # -- Module's interface ------------------------------------------------------------------

    def c_statement_lines(self, function: Function) -> List[StatementLine]:
        if self.c_lines:
            return []  # no #line directives: no artifact rows to tell apart
        return super().c_statement_lines(function)

    def _named(self, spec: str, exact_only: bool) -> List[Function]:
        callable_ = [f for f in self.functions if not f.is_module_init]
        matches = [f for f in callable_ if f.qualified_name == spec or f.display_name == spec or spec in f.aliases]
        if not matches and not exact_only:
            matches = [f for f in callable_ if f.display_name.endswith("." + spec) or f.name == spec
                       or any(alias.endswith("." + spec) for alias in f.aliases)]
        return prefer_generator_bodies(matches)

    def describe_origin(self) -> str:
        """How this module is known, for messages."""
        if self.c_file is None:
            return "names from its symbols; no .pyx lines (its generated C file was not found)"
        return f"names from its symbols, .pyx lines from the position comments in {self.c_file.path}"


def _stamp(path: str) -> Tuple[int, int]:
    try:
        info = os.stat(path)
    except OSError:
        return (0, 0)
    return (info.st_mtime_ns, info.st_size)


def describe(so_path: str, dwarf_c_paths: Sequence[str] = (), anchors: Sequence[str] = ()) -> Optional[ForeignModule]:
    """A ForeignModule for a Cython extension module's shared object, or None when it is
    not one (or cannot be read). `dwarf_c_paths`: the C file its debug information names."""
    if not elf.looks_like_cython(so_path):
        return None
    symbols = elf.defined_names(so_path)
    short = os.path.basename(so_path).split(".", 1)[0]
    name = module_name_from_symbols(symbols, short) or module_name_from_path(so_path)
    c_path = find_c_file(so_path, name, dwarf_c_paths)
    c_file = None
    if c_path is not None:
        try:
            c_file = CFile(c_path)
        except OSError:
            c_file = None
    if c_file is not None and c_file.module_name and c_file.module_name.rsplit(".", 1)[-1] == short:
        name = c_file.module_name
    module = ForeignModule(so_path, name, symbols, c_file, anchors)
    if c_file is not None:
        try:
            if os.path.getmtime(c_file.path) > os.path.getmtime(so_path) + 2:
                module.notes.append(f"{c_file.path} is newer than the module: its .pyx lines may be off")
        except OSError:
            pass
    return module
