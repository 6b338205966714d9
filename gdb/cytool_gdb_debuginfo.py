"""Cython's debug information for one module, read without Cython.

Owns the reading of `cython_debug/cython_debug_info_<module>` (the XML Cython writes
with `--gdb`) and of the generated C file next to it: which Cython functions exist,
their C names, locals and globals, and which `.pyx`/`.pxi` lines each function's C body
covers; and `c_name`, the one place where a name gdb or the ELF symbols give a C function
(a C++ signature, a gcc clone) becomes the C name Cython gave it. Pure standard library:
this runs inside gdb's embedded Python, but nothing in here touches gdb, so it can be
tested on its own.
"""
from __future__ import annotations

import bisect
import os
import re
import xml.etree.ElementTree as ElementTree
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple


# gcc's clones of a function: `f.isra.0`, `f.cold`, `f.constprop.0.isra.0` (C symbols) ...
_CLONE_SUFFIX = re.compile(r"(?:\.(?:cold|isra|constprop|part|lto_priv|localalias)(?:\.\d+)*)+$")
# ... and, demangled from a C++ symbol, `f(int) [clone .isra.0]` (several may follow)
_CPP_CLONE = re.compile(r"(?:\s*\[clone \.[\w.]+\])+$")
_CPP_TRAILER = re.compile(r"\s*(?:const|volatile|&&|&|noexcept)\s*$")
# an ELF symbol of C++ code outside any namespace (as Cython's are): `_ZL19__pyx_f_1m_3Acc_addP16__pyx_obj_1m_Accd`
_MANGLED = re.compile(r"^_ZL?(\d+)")


def c_name(name: Optional[str]) -> str:
    """The C name of a function as Cython wrote it (`__pyx_f_1m_3Acc_add`) from a name gdb
    or the ELF symbols give it: a block's or symbol's name in a C++ module carries the
    signature (`__pyx_f_1m_3Acc_add(__pyx_obj_1m_Acc*, double)`; frame.name() does not),
    possibly scopes (`(anonymous namespace)::f(int)`) and a demangled clone (`f(int)
    [clone .isra.0]`); its ELF symbol is mangled (`_ZL19__pyx_f_1m_3Acc_addP...d`); a C
    symbol may be a gcc clone (`__pyx_f_3mod_work.isra.0`). All of that is dropped; a
    plain C name comes back as it is, None as ''. Every comparison of a gdb name with
    Cython's C names goes through here."""
    if not name:
        return ""
    if "(" not in name and "." not in name and ":" not in name and not name.startswith("_Z"):
        return name  # (the common case, C)
    mangled = _MANGLED.match(name)
    if mangled is not None:
        start = mangled.end()
        return name[start:start + int(mangled.group(1))]
    name = _CPP_CLONE.sub("", name.strip())
    while True:  # `f(int) const` and the like (not Cython's, but harmless)
        trimmed = _CPP_TRAILER.sub("", name)
        if trimmed == name:
            break
        name = trimmed
    if name.endswith(")"):
        depth = 0
        for index in range(len(name) - 1, -1, -1):  # the parameter list's own "(", not one inside it
            depth += {")": 1, "(": -1}.get(name[index], 0)
            if depth == 0:
                if index > 0:  # (not a name that is all parentheses, like gdb's "(anonymous namespace)")
                    name = name[:index]
                break
    if "::" in name:
        name = name.rsplit("::", 1)[1]
    return _CLONE_SUFFIX.sub("", name)


class Local:
    """A Cython name: a local variable, an argument, a closure variable or a global."""

    def __init__(self, name: str, cname: str, qualified_name: str, kind: str, lineno: int) -> None:
        self.name = name
        self.cname = cname
        self.qualified_name = qualified_name
        self.is_python_object = kind == "PythonObject"
        self.lineno = lineno

    def __repr__(self) -> str:
        return f"Local({self.name!r}, {self.cname!r})"


class Function:
    """A Cython function as the XML describes it, plus the lines its C body covers."""

    def __init__(self, module: "Module", element: ElementTree.Element) -> None:
        self.module = module
        self.name = element.get("name", "")
        self.cname = element.get("cname", "")
        self.pf_cname = element.get("pf_cname", "")
        self.qualified_name = element.get("qualified_name", "")
        self.lineno = int(element.get("lineno", "0"))
        self.is_module_init = element.get("is_initmodule_function") == "True"
        self.locals: Dict[str, Local] = {}
        for var in element.iter("LocalVar"):
            local = _local(var)
            self.locals.setdefault(local.name, local)
        arguments = element.find("Arguments")
        self.arguments: List[str] = [child.tag for child in arguments] if arguments is not None else []
        self.step_into: List[str] = [e.get("name", "") for e in element.iter("StepIntoFunction")]
        # filled in by Module: {source path: set of lines} covered by this function's C body
        self.lines: Dict[str, Set[int]] = {}
        self.source: Optional[str] = None  # the file holding the def line

    @property
    def is_generator_body(self) -> bool:
        """The C function that runs a generator's, coroutine's or async function's body
        (Cython's `__pyx_gb_...`); its namesake `__pyx_pf_...` only creates the object."""
        return self.cname.startswith("__pyx_gb_")

    @property
    def is_lambda(self) -> bool:
        return self.cname.startswith("__pyx_lambda_funcdef")

    def last_line(self) -> int:
        """The last line of the def file this function has code on (its def line if none)."""
        lines = self.lines.get(self.source or "", ())
        return max(lines) if lines else self.lineno

    @property
    def display_name(self) -> str:
        """`work`, `Acc.add`, `make_counter.bump`: the qualified name without the module."""
        if self.is_module_init:
            return "<module>"
        prefix = self.module.name + "."
        name = self.qualified_name
        return name[len(prefix):] if name.startswith(prefix) else (name or self.name)

    def covers(self, path: str, line: int) -> bool:
        """Whether this function has code on path:line. gdb may name a file differently
        from the XML (relative #line names resolved elsewhere): fall back to the basename."""
        lines = self.lines.get(path)
        if lines is None:
            base = os.path.basename(path)
            lines = next((v for k, v in self.lines.items() if os.path.basename(k) == base), set())
        return line in lines

    def first_statement(self) -> Optional[int]:
        """The first line after the def line that this function's body has code for."""
        if self.source is None:
            return None
        later = [line for line in self.lines.get(self.source, ()) if line > self.lineno]
        return min(later) if later else None

    def __repr__(self) -> str:
        return f"Function({self.qualified_name!r}, {self.cname!r})"


def _local(var: ElementTree.Element) -> Local:
    return Local(
        var.get("name", ""),
        var.get("cname", ""),
        var.get("qualified_name", ""),
        var.get("type", ""),
        int(var.get("lineno", "0") or 0),
    )


class Module:
    """One Cython module: its functions, globals and line ownership."""

    def __init__(self, xml_path: str) -> None:
        self.xml_path = os.path.abspath(xml_path)
        tree = ElementTree.parse(self.xml_path)
        element = tree.getroot().find("Module")
        if element is None:
            raise ValueError(f"{xml_path}: not a Cython debug info file (no <Module>)")
        self.name = element.get("module_name", "")  # dotted for a package module: pkg.sub.mod
        self.filename = element.get("filename", "")
        self.c_filename = element.get("c_filename", "")
        self.functions: List[Function] = [Function(self, f) for f in element.iter("Function")]
        self.globals: Dict[str, Local] = {}
        globals_element = element.find("Globals")
        if globals_element is not None:
            for var in globals_element.iter("LocalVar"):
                local = _local(var)
                self.globals.setdefault(local.name, local)
        # source path -> line -> C lines
        self.line_map: Dict[str, Dict[int, List[int]]] = {}
        for entry in element.iter("LineNumber"):
            path = entry.get("src_path", "")
            line = int(entry.get("src_lineno", "0"))
            c_lines = [int(n) for n in entry.get("c_linenos", "").split()]
            self.line_map.setdefault(path, {}).setdefault(line, []).extend(c_lines)
        self.by_cname: Dict[str, Function] = {}
        for function in self.functions:
            self.by_cname[function.cname] = function
        self._assign_lines()
        self._classes: Optional[Dict[str, str]] = None

    @property
    def short_name(self) -> str:
        """`mod` for `pkg.sub.mod`: the name the shared object starts with."""
        return self.name.rsplit(".", 1)[-1]

    @property
    def package(self) -> List[str]:
        """`["pkg", "sub"]` for `pkg.sub.mod`: the directories the shared object sits in."""
        return self.name.split(".")[:-1]

    def classes(self) -> Dict[str, str]:
        """{type name as Python shows it (`pkg.mod.Vec`): C struct of its instances}."""
        if self._classes is None:
            self._classes = cdef_class_structs(self.c_filename)
        return self._classes

    # -- files -------------------------------------------------------------------------

    @property
    def sources(self) -> List[str]:
        paths = list(self.line_map)
        if self.filename and self.filename not in paths:
            paths.insert(0, self.filename)
        return paths

    def find_source(self, name: str) -> Optional[str]:
        """The full path of one of this module's source files given as a path or basename."""
        if not name:
            return self.filename
        for path in self.sources:
            if path == name or os.path.abspath(name) == path:
                return path
        for path in self.sources:
            if os.path.basename(path) == os.path.basename(name) and path.endswith(name):
                return path
        return None

    def lines_with_code(self, path: str) -> List[int]:
        return sorted(self.line_map.get(path, {}))

    # -- ownership -----------------------------------------------------------------------

    def c_statement_lines(self, function: Function) -> List["StatementLine"]:
        """The function's C lines with code as the line table will see them, in C order
        (see c_statement_lines below). Empty when the C file cannot be read."""
        extent = self.c_extents.get(function.cname)
        if extent is None:
            return []
        return c_statement_lines(self.c_filename, extent)

    def _assign_lines(self) -> None:
        extents = c_function_extents(self.c_filename, [f.cname for f in self.functions])
        self.c_extents = extents
        spans: List[Tuple[int, int, Function]] = []
        for function in self.functions:
            extent = extents.get(function.cname)
            if extent is not None:
                spans.append((extent[0], extent[1], function))
        spans.sort(key=lambda span: span[0])
        starts = [span[0] for span in spans]
        for path, lines in self.line_map.items():
            for line, c_lines in lines.items():
                for c_line in c_lines:
                    index = bisect.bisect_right(starts, c_line) - 1
                    if index >= 0 and spans[index][0] <= c_line <= spans[index][1]:
                        spans[index][2].lines.setdefault(path, set()).add(line)
        for function in self.functions:
            function.source = self._def_file(function)

    def _def_file(self, function: Function) -> Optional[str]:
        """The file holding the function's def line: the one whose lines include it."""
        candidates = [path for path, lines in function.lines.items() if function.lineno in lines]
        for path in candidates:
            if path == self.filename:
                return path
        if candidates:
            return candidates[0]
        return self.filename if function.is_module_init else None

    def function_named(self, spec: str) -> List[Function]:
        """Functions matching `work`, `mod.work`, `pkg.sub.mod.work`, `Acc.add`,
        `make_counter.bump`. A generator, coroutine or async function is its body."""
        spec = spec.strip()
        for prefix in (self.name + ".", self.short_name + "."):
            if spec.startswith(prefix):
                exact = self._named(spec[len(prefix):], exact_only=True)
                if exact:
                    return exact
        return self._named(spec, exact_only=False)

    def _named(self, spec: str, exact_only: bool) -> List[Function]:
        callable_ = [f for f in self.functions if not f.is_module_init and f.source is not None]
        matches = [f for f in callable_ if f.qualified_name == spec or f.display_name == spec]
        if not matches and not exact_only:
            matches = [f for f in callable_ if f.display_name.endswith("." + spec) or f.name == spec]
        return prefer_generator_bodies(matches)

    def owners(self, path: str, line: int) -> List[Function]:
        """The Cython functions whose own code is on this line (module init only if no other)."""
        owners = [f for f in self.functions if f.covers(path, line)]
        inner = [f for f in owners if not f.is_module_init]
        return inner or owners

    def def_line_function(self, path: str, line: int) -> Optional[Function]:
        """The function defined on this line, if it is a def/cdef/cpdef line."""
        for function in self.functions:
            if not function.is_module_init and function.lineno == line and function.source == path:
                return function
        return None

    def module_init(self) -> Optional[Function]:
        for function in self.functions:
            if function.is_module_init:
                return function
        return None


def prefer_generator_bodies(functions: List[Function]) -> List[Function]:
    """A generator is two C functions with one qualified name: keep the one running its body."""
    bodies = {f.qualified_name for f in functions if f.is_generator_body}
    return [f for f in functions if f.is_generator_body or f.qualified_name not in bodies]


def nearest(candidates: Iterable[int], line: int) -> Optional[int]:
    """The candidate closest to `line`; on a tie the later one (where gdb would slide)."""
    best: Optional[int] = None
    for candidate in candidates:
        if candidate == line:
            continue
        if best is None or (abs(candidate - line), -candidate) < (abs(best - line), -best):
            best = candidate
    return best


_DEFINITION_END = re.compile(r"\)\s*\{\s*$")


def c_function_extents(c_filename: str, cnames: Iterable[str]) -> Dict[str, Tuple[int, int]]:
    """{C name: (first line, last line)} of each function's definition in the C file."""
    wanted = set(name for name in cnames if name)
    result: Dict[str, Tuple[int, int]] = {}
    try:
        with open(c_filename, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().split("\n")
    except OSError:
        return result
    pattern = re.compile(r"\b(" + "|".join(re.escape(n) for n in sorted(wanted, key=len, reverse=True)) + r")\(")
    index = 0
    count = len(lines)
    while index < count:
        text = lines[index]
        if text and not text[0].isspace() and text[0] not in "#}/*" and "(" in text:
            match = pattern.search(text)
            if match and match.group(1) not in result:
                end_of_header = _header_end(lines, index)
                if end_of_header is not None:
                    body_end = index + 1
                    while body_end < count and lines[body_end] != "}":
                        body_end += 1
                    # C line numbers are 1-based
                    result[match.group(1)] = (index + 1, body_end + 1)
                    index = body_end
        index += 1
    return result


_DIRECTIVE = re.compile(r'^#line (\d+) "([^"]*)"')
_NO_CODE = [
    re.compile(r"^[{}();\s]*(else\b)?[{}();\s]*$"),  # braces, `} else {`
    re.compile(r"^(for\s*\(\s*;\s*;|while\s*\(\s*1\s*\)\s*\{?$|do\s*\{?$)"),  # endless loops
    re.compile(r"^__pyx_L\w+:;?$"),  # labels
    re.compile(r"^(const\s+|static\s+|struct\s+|unsigned\s+|CYTHON_UNUSED\s+)*[A-Za-z_]\w*(\s*\*+\s*|\s+)"
               r"[A-Za-z_]\w*(\[\w*\])?;?$"),  # a declaration without initialiser
    re.compile(r"^(__Pyx_RefNanny\w*|__Pyx_X?GOTREF|__Pyx_X?GIVEREF|CYTHON_UNUSED_VAR|CYTHON_MAYBE_UNUSED_VAR)\b"),
]


def _produces_code(text: str) -> bool:
    """Whether a line of Cython's C output compiles to machine code (a guess on syntax)."""
    stripped = text.strip()
    if not stripped or stripped.startswith(("#", "/*", "*", "//")):
        return False
    return not any(pattern.match(stripped) for pattern in _NO_CODE)


_c_cache: Dict[str, List[str]] = {}
_statements_cache: Dict[Tuple[str, Tuple[int, int]], List["StatementLine"]] = {}  # (C file, extent): its lines (the C files do not change under a debug session)


class StatementLine(NamedTuple):
    """One C line with code of a Cython function, as its #line directives number it."""
    source: str  # basename of the .pyx/.pxi/.pxd
    line: int
    artifact: bool  # no #line of its own: it carries the number of the line after its statement
    conditional: bool  # inside #if/#ifdef/#ifndef: compiled only when the condition holds


_CONDITIONAL_START = re.compile(r"^\s*#\s*if(n?def)?\b")
_CONDITIONAL_END = re.compile(r"^\s*#\s*endif\b")


def c_statement_lines(c_filename: str, extent: Tuple[int, int]) -> List[StatementLine]:
    """The C lines with code in a function, in C order.

    `#line N` gives the next C line the number N and each following C line one more,
    so a C line that Cython wrote without a `#line` of its own (the continuation of a
    multi-line piece of code) carries the number of the line after its statement: an
    artifact. The line table cannot tell those rows from real ones; their order can:
    at -O0 the code follows the C text, so the k-th code run of a line in the line
    table is its k-th entry here. Lines between #if and #endif are marked conditional:
    which branch was compiled (CYTHON_VECTORCALL, the Python version ...) is not known
    here, so the caller decides from the line table (cytool_gdb_placement.function_runs)."""
    known = _statements_cache.get((c_filename, extent))
    if known is not None:
        return known
    if c_filename not in _c_cache:
        try:
            with open(c_filename, encoding="utf-8", errors="replace") as handle:
                _c_cache[c_filename] = handle.read().split("\n")
        except OSError:
            _c_cache[c_filename] = []
    found = _statement_lines(_c_cache[c_filename], extent)
    _statements_cache[(c_filename, extent)] = found
    return found


def _statement_lines(lines: List[str], extent: Tuple[int, int]) -> List[StatementLine]:
    start, end = extent[0] - 1, min(extent[1], len(lines))
    directive = start
    while directive > 0 and not _DIRECTIVE.match(lines[directive]):
        directive -= 1
    opening = _header_end(lines, start)  # the line holding the body's `{`: the prologue's line
    if opening is None:
        return []
    current: Optional[Tuple[str, int]] = None
    offset = 0
    depth = 0  # #if nesting inside the function
    found: List[StatementLine] = []
    for index in range(max(directive, 0), end):
        text = lines[index]
        match = _DIRECTIVE.match(text)
        if match:
            current, offset = (os.path.basename(match.group(2)), int(match.group(1))), 0
            continue
        if index > start and _CONDITIONAL_START.match(text):
            depth += 1
        elif index > start and _CONDITIONAL_END.match(text):
            depth = max(depth - 1, 0)
        code = index == opening or (index > opening and _produces_code(text))
        if current is not None and code:
            found.append(StatementLine(current[0], current[1] + offset, offset > 0, depth > 0))
        offset += 1
    return found


def _header_end(lines: List[str], start: int) -> Optional[int]:
    """Index of the line ending a function definition's header, or None for a prototype."""
    for index in range(start, min(start + 40, len(lines))):
        text = lines[index].rstrip()
        if text.startswith("#"):
            continue
        if _DEFINITION_END.search(text) or (index > start and text == "{"):
            return index
        if text.endswith(";") or text.endswith("*/") and ";" in text:
            return None
    return None


def find_debug_info(path: str) -> List[str]:
    """XML files for a build directory, a cython_debug directory, a module .so or the XML itself."""
    if os.path.isfile(path):
        if os.path.basename(path).startswith("cython_debug_info_"):
            return [path]
        found = debug_info_for_shared_object(path)
        return [found] if found else []
    if os.path.isdir(path):
        directory = path
        if os.path.isdir(os.path.join(path, "cython_debug")):
            directory = os.path.join(path, "cython_debug")
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            return []
        return [os.path.join(directory, n) for n in names if n.startswith("cython_debug_info_")]
    return []


SEARCH_LEVELS = 4  # how many directories above a module's .so may hold its cython_debug/


def debug_info_for_shared_object(so_path: str) -> Optional[str]:
    """The debug XML of a Cython module's shared object, or None.

    Cython writes `cython_debug/cython_debug_info_<module>` into its output directory:
    beside the .so for cytool's builds, at the project root for setuptools builds of a
    package (`pkg/sub/mod.*.so` with `cython_debug_info_pkg.sub.mod` some levels up).
    A dotted name is taken only where the directories above the .so spell its package."""
    so_path = os.path.abspath(so_path)
    short = os.path.basename(so_path).split(".", 1)[0]
    directory = os.path.dirname(so_path)
    package: List[str] = []
    for _ in range(SEARCH_LEVELS):
        debug_dir = os.path.join(directory, "cython_debug")
        dotted = ".".join(package + [short])
        for name in ((dotted, short) if package else (short,)):
            candidate = os.path.join(debug_dir, "cython_debug_info_" + name)
            if os.path.isfile(candidate):
                return candidate
        if os.path.isdir(debug_dir):  # a dotted name with fewer package levels than we walked
            try:
                entries = os.listdir(debug_dir)
            except OSError:
                entries = []
            beside = [e for e in sorted(entries) if e.startswith("cython_debug_info_") and e.split(".")[-1] == short]
            if not package and len(beside) == 1:
                return os.path.join(debug_dir, beside[0])  # cytool's cache entry: pkg.mod's XML beside mod.so
            for entry in beside:
                if ("." + dotted).endswith("." + entry[len("cython_debug_info_"):]):
                    return os.path.join(debug_dir, entry)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        package.insert(0, os.path.basename(directory))
        directory = parent
    return None


_TYPE_NAME_AND_STRUCT = re.compile(r'((?:"[\w.]*"\s*)+),[^\n]*\n\s*sizeof\(struct (__pyx_obj_\w+)\)')


def debug_info_from_index(index_dirs: Iterable[str], build_id: Optional[str]) -> Optional[str]:
    """The debug XML the module index (cytool.module_index: `<dir>/<build-id>.json`,
    written for every module cytool builds or `cytool develop` builds) names for a
    shared object's GNU build-id, if it still exists."""
    if not build_id or not re.fullmatch(r"[0-9a-f]{8,128}", build_id):
        return None
    import json

    for directory in index_dirs:
        try:
            with open(os.path.join(directory, build_id + ".json"), encoding="utf-8") as handle:
                entry = json.load(handle)
        except (OSError, ValueError):
            continue
        debug_info = entry.get("debug_info") if isinstance(entry, dict) else None
        if isinstance(debug_info, str) and os.path.isfile(debug_info):
            return debug_info
    return None


def cdef_class_structs(c_filename: str) -> Dict[str, str]:
    """{`pkg.mod.Vec`: `__pyx_obj_3pkg_3mod_Vec`} from the type definitions of the C file
    (a PyType_Spec since Cython 3, a static PyTypeObject before: name, then size)."""
    try:
        with open(c_filename, encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return {}
    found = {}
    for match in _TYPE_NAME_AND_STRUCT.finditer(text):  # "pkg.mod.""Vec" is one C string
        found["".join(re.findall(r'"([\w.]*)"', match.group(1)))] = match.group(2)
    return found


# -- the .pyx text itself ---------------------------------------------------------------

_source_cache: Dict[str, List[str]] = {}


def source_lines(path: str) -> List[str]:
    if path not in _source_cache:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                _source_cache[path] = handle.read().split("\n")
        except OSError:
            _source_cache[path] = []
    return _source_cache[path]


def source_line(path: str, line: int) -> str:
    lines = source_lines(path)
    return lines[line - 1] if 1 <= line <= len(lines) else ""


def is_blank_or_comment(path: str, line: int) -> bool:
    """True for a line that holds no statement (read from the source, when it can be read)."""
    lines = source_lines(path)
    if not 1 <= line <= len(lines):
        return False
    text = lines[line - 1].strip()
    return not text or text.startswith("#")


_BRANCH_HEADER = re.compile(r"^(if\b|elif\b|else\s*:|try\s*:|except\b|finally\s*:)")


def is_branch_header(path: str, line: int) -> bool:
    """`if`/`elif`/`else`/`try`/`except`/`finally` lines: Python never comes back to them
    after running their block (unlike `for`, `while` and `with` lines)."""
    return bool(_BRANCH_HEADER.match(source_line(path, line).strip()))


_LOOP_HEADER = re.compile(r"^(async\s+)?(for|while)\b")


def is_loop_header(path: str, line: int) -> bool:
    return bool(_LOOP_HEADER.match(source_line(path, line).strip()))


def first_assignment_line(function: Function, local: Local) -> int:
    """The first line of the function at or after the local's declaration that assigns
    it (`x = `, `x += `, `for x in`, `cdef T x = `, `as x`), else its declaration line."""
    if function.source is None:
        return local.lineno
    name = re.escape(local.name)
    assigns = re.compile(
        r"(^|[\s,(])" + name + r"\s*(\[[^\]]*\])?\s*([-+*/%&|^@]|//|<<|>>|\*\*)?=(?!=)"
        r"|\bfor\s+(\(?\s*[\w\s,]*,\s*)?" + name + r"\b[\w\s,)]*\bin\b"
        r"|\bas\s+" + name + r"\b"
    )
    start = max(local.lineno, function.lineno + 1)
    for line in range(start, function.last_line() + 1):
        text = source_line(function.source, line).split("#", 1)[0]
        if assigns.search(text):
            return line
    return local.lineno
