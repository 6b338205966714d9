"""Reports on captures that may come from someone else (README "Security"): the file names
in a capture never make `cytool report` read or embed a file that is not a source file
(private files, /etc/passwd, FIFOs, devices, directories, links out), a source changed
since its module was built is not shown against the old line numbers (unless
--show-changed-sources, and then marked), and the HTML page escapes every name and line.
Cases: /work/shared/cases/trust/{hostile_capture_embeds_local_files, report_fifo_hangs,
report_shows_edited_source_silently}."""
from __future__ import annotations

import json
import os
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures" / "reports"))

from capture_writer import CaptureWriter, py_word  # noqa: E402

from conftest import RunCytool  # noqa: E402

SECRET = "SECRET-TOKEN-7f3a9c"
HOSTILE_NAME = "</script><script>alert(1)</script>\"'><img src=x onerror=alert(2)>\x1b[31m\x07\x0b"


def write_capture(path: Path, frames: List[Tuple[str, str, int]], threads: Tuple[str, ...] = ("MainThread",)) -> None:
    """A capture whose Python-frame records name (function, file, line), one allocation
    each (16 bytes, leaked), spread over `threads`."""
    with CaptureWriter(path) as w:
        for i, (function, file, line) in enumerate(frames, start=1):
            w.pyframe(i, line, function, file)
            w.stack(i, [py_word(i)])
        for t, name in enumerate(threads):
            w.thread(t, 100 + t, name)
        for t in range(len(threads)):
            events = [("malloc", 1, 0x1000 * (i + 1) + t * 0x100000, 16 * (i + 1), i + 1)
                      for i in range(len(frames)) if i % len(threads) == t]
            w.batch(t, 0, events)
        w.end(1000)


def private_file(folder: Path) -> Path:
    secret = folder / "private.txt"
    secret.write_text("".join(f"line {i} {SECRET}\n" for i in range(1, 21)))
    secret.chmod(0o600)
    return secret


def report_everything(run_cytool: RunCytool, capture: Path, tmp_path: Path, *extra: str) -> Dict[str, str]:
    """The table, HTML and JSON reports of `capture` (each must succeed at once)."""
    out: Dict[str, str] = {}
    table = run_cytool("report", capture, "--limit", "40", *extra, timeout=120)
    assert table.returncode == 0, table.stderr
    out["table"] = table.stdout + table.stderr
    page = tmp_path / "report.html"
    html = run_cytool("report", capture, "-o", page, *extra, timeout=120)
    assert html.returncode == 0, html.stderr
    out["html"] = page.read_text(encoding="utf-8")
    js = run_cytool("report", capture, "-f", "json", *extra, timeout=120)
    assert js.returncode == 0, js.stderr
    out["json"] = js.stdout
    for name, text in out.items():
        assert "Traceback" not in text, (name, text[-2000:])
    return out


# -- what a capture names: only source files are ever read ---------------------------------

def test_hostile_capture_never_embeds_local_files(run_cytool: RunCytool, tmp_path: Path) -> None:
    secret = private_file(tmp_path)
    (tmp_path / "link.py").symlink_to(secret)  # a source name that leads to a private file
    (tmp_path / "dir.pyx").mkdir()
    os.mkfifo(tmp_path / "fifo.py")  # opening it for reading would block for ever
    (tmp_path / "zero.pyx").symlink_to("/dev/zero")
    os.mkfifo(tmp_path / "fifo.txt")
    long_name = "/" + "a" * 300 + "/" + "b" * 5000 + ".py"
    frames = [(f"f{i}", str(secret), i) for i in range(1, 21)]
    frames += [
        ("passwd", "/etc/passwd", 1),
        ("up", str(tmp_path / "x" / ".." / ".." / tmp_path.name / "private.txt"), 2),
        ("link", str(tmp_path / "link.py"), 3),
        ("directory", str(tmp_path / "dir.pyx"), 1),
        ("fifo", str(tmp_path / "fifo.py"), 1),
        ("fifo2", str(tmp_path / "fifo.txt"), 1),
        ("zero", str(tmp_path / "zero.pyx"), 1),
        ("long", long_name, 1),
        ("control", str(tmp_path / "con\x1b[2Jtrol\x07.py"), 1),
    ]
    capture = tmp_path / "evil.cytrace"
    write_capture(capture, frames)
    out = report_everything(run_cytool, capture, tmp_path)
    root_line = Path("/etc/passwd").read_text().splitlines()[0]
    for name, text in out.items():
        assert SECRET not in text, name
        assert root_line not in text, name
        assert "\x1b" not in text and "\x07" not in text, name
    table = out["table"]
    assert "private.txt: source text not shown: not a source file (.txt): never read" in table
    assert f"link.py: source text not shown: a link to {secret}, not a source file: never read" in table
    assert "fifo.py: source text not shown: not a regular file (a FIFO, a device?): never read" in table
    assert "dir.pyx: source text not shown: a directory: never read" in table
    assert "zero.pyx: source text not shown: a link to /dev/zero, not a source file: never read" in table
    sources = json.loads(out["json"])["sources"]
    assert sources[str(secret)] == {"state": "refused", "shown": False,
                                    "reason": "not a source file (.txt): never read"}
    assert sources[str(tmp_path / "fifo.py")]["state"] == "refused"
    assert sources[long_name]["shown"] is False
    assert all(not s["shown"] for s in sources.values())
    assert any("private.txt: source text not shown" in w for w in json.loads(out["json"])["capture"]["warnings"])
    assert "source not shown: " + str(secret) in out["html"]


def test_a_real_python_source_named_by_a_capture_is_shown(run_cytool: RunCytool, tmp_path: Path) -> None:
    """The rule keeps what a real capture needs: the lines of a Python file it names."""
    script = tmp_path / "work.py"
    script.write_text("import os\n\ndata = [bytearray(100) for _ in range(10)]  # allocates\n")
    capture = tmp_path / "real.cytrace"
    write_capture(capture, [("<module>", str(script), 3)])
    out = report_everything(run_cytool, capture, tmp_path)
    assert "data = [bytearray(100) for _ in range(10)]  # allocates" in out["table"]
    document = json.loads(out["json"])
    assert document["lines"][0]["source"] == "data = [bytearray(100) for _ in range(10)]  # allocates"
    assert document["sources"][str(script)] == {"state": "unverified", "shown": True, "reason": ""}


def test_object_and_capture_fifos_fail_or_are_skipped_at_once(run_cytool: RunCytool, tmp_path: Path) -> None:
    """report_fifo_hangs: a FIFO given as the capture or as profile's -o is refused at once;
    an OBJECT record naming a FIFO is skipped (its frames are raw addresses)."""
    fifo = tmp_path / "p.cytrace"
    os.mkfifo(fifo)
    done = run_cytool("report", fifo, timeout=60)
    assert done.returncode == 2 and "not a regular file" in done.stderr and "Traceback" not in done.stderr
    source = tmp_path / "hello.pyx"
    source.write_text("print('hello')\n")
    done = run_cytool("profile", source, "-o", fifo, timeout=120)
    assert done.returncode == 2 and "p.cytrace: not a regular file" in done.stderr, done.stderr
    obj = tmp_path / "obj.fifo"
    os.mkfifo(obj)
    capture = tmp_path / "fifo_obj.cytrace"
    with CaptureWriter(capture) as w:
        w.object(1, 0x7F0000000000, str(obj), b"\x01\x02\x03\x04", [(0x7F0000000000, 0x7F0000100000)])
        w.stack(1, [0x7F0000000100 << 1])
        w.thread(0, 100, "MainThread")
        w.batch(0, 0, [("malloc", 1, 0x1000, 16, 1)])
        w.end(10)
    done = run_cytool("report", capture, "--native", "-f", "collapsed", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "obj.fifo+0x100 16"


# -- a source changed since the build -------------------------------------------------------

PYX = """\
def build(int n):
    cdef list out = []
    for i in range(n):
        out.append([i] * 40)
    return out

kept = build(300)
"""
HOT_LINE = "out.append([i] * 40)"


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Path, Path]:
    """(folder, capture) of a real `cytool profile` of trustmod.pyx."""
    import subprocess

    folder = tmp_path_factory.mktemp("changed")
    (folder / "trustmod.pyx").write_text(PYX)
    done = subprocess.run([sys.executable, "-m", "cytool", "profile", "trustmod.pyx", "--no-summary", "-o", "run.cytrace"],
                          cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return folder, folder / "run.cytrace"


def test_unchanged_source_is_shown_verified(run_cytool: RunCytool, profiled: Tuple[Path, Path], tmp_path: Path) -> None:
    folder, capture = profiled
    out = report_everything(run_cytool, capture, tmp_path)
    assert "trustmod.pyx:4" in out["table"] and HOT_LINE in out["table"]
    assert "changed since" not in out["table"]
    document = json.loads(out["json"])
    assert document["sources"][str(folder / "trustmod.pyx")] == {"state": "verified", "shown": True, "reason": ""}
    assert "changed since the build" not in out["html"]


def edited(folder: Path, tmp_path: Path, how: str) -> Path:
    """A copy of the profiled folder whose trustmod.pyx was edited (`prepend`) or replaced
    by a link to another .pyx (`link`) after the build; the capture names the old path, so
    the copy keeps the path: the original is restored by the caller."""
    source = folder / "trustmod.pyx"
    saved = tmp_path / "saved.pyx"
    saved.write_bytes(source.read_bytes())
    if how == "prepend":
        source.write_text("# added 1\n# added 2\n# added 3\n" + PYX)
    else:
        other = tmp_path / "other.pyx"
        other.write_text("x = 1\ny = 2\nz = 3\nprint('an unrelated file, line 4')\n")
        source.unlink()
        source.symlink_to(other)
    return saved


@pytest.mark.parametrize("how", ["prepend", "link"])
def test_changed_source_is_not_shown_against_old_lines(run_cytool: RunCytool, profiled: Tuple[Path, Path],
                                                       tmp_path: Path, how: str) -> None:
    folder, capture = profiled
    source = folder / "trustmod.pyx"
    saved = edited(folder, tmp_path, how)
    try:
        out = report_everything(run_cytool, capture, tmp_path)
        now_line4 = source.read_text().splitlines()[3].strip()
        assert "trustmod.pyx:4" in out["table"]  # the figures stay
        for name, text in out.items():
            assert now_line4 not in text, name  # the new line 4 is never shown as line 4
        assert "trustmod.pyx: changed since the module was built" in out["table"]
        assert "--show-changed-sources shows it" in out["table"]
        if how == "link":
            assert "(it is now a link to another file)" in out["table"]
        status = json.loads(out["json"])["sources"][str(source)]
        assert status["state"] == "changed" and status["shown"] is False
        # the line as it was built, from the comments of the build's generated C file
        assert f"(as built) {HOT_LINE}" in out["table"]
        assert json.loads(out["json"])["lines"][0]["source"] == HOT_LINE
        assert f'<span class="changed-mark">(as built) </span>{HOT_LINE}' in out["html"].replace("&#39;", "'")

        shown = report_everything(run_cytool, capture, tmp_path, "--show-changed-sources")
        assert f"(changed) {now_line4}" in shown["table"]
        assert "shown as it is now (--show-changed-sources)" in shown["table"]
        assert json.loads(shown["json"])["sources"][str(source)]["shown"] is True
        assert "changed since the build: " in shown["html"] and 'class="changed-mark"' in shown["html"]
    finally:
        source.unlink()
        source.write_bytes(saved.read_bytes())


# -- the HTML page escapes everything that comes from the capture --------------------------

class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: List[Tuple[str, List[Tuple[str, str]]]] = []
        self.script_text: List[str] = []
        self._in_script = False
        self.text: List[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:  # type: ignore[override]
        self.tags.append((tag, attrs))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        (self.script_text if self._in_script else self.text).append(data)


def page_elements(page: str) -> _Elements:
    parser = _Elements()
    parser.feed(page)
    parser.close()
    return parser


def test_html_escapes_hostile_names_and_source(run_cytool: RunCytool, tmp_path: Path) -> None:
    folder = tmp_path / HOSTILE_NAME.replace("/", "_").replace("\x1b", "E")
    folder.mkdir()
    hostile_py = folder / "m<script>\"<img src=x onerror=alert(3)>.py"
    hostile_py.write_text(f"x = 1\ny = '</script><script>alert(4)</script>'  # {HOSTILE_NAME}\n<!--<script>\n")
    frames = [(HOSTILE_NAME, str(hostile_py), 2), ("f<b>\"", str(hostile_py), 3), ("<!--<script>", str(hostile_py), 1)]
    capture = tmp_path / "names.cytrace"
    write_capture(capture, frames, threads=("MainThread", HOSTILE_NAME))
    page_path = tmp_path / "page.html"
    done = run_cytool("report", capture, "-o", page_path, timeout=120)
    assert done.returncode == 0, done.stderr
    page = page_path.read_text(encoding="utf-8")
    clean = tmp_path / "clean.cytrace"
    plain_py = tmp_path / "plain.py"
    plain_py.write_text("x = 1\ny = 2\nz = 3\n")
    write_capture(clean, [("plain", str(plain_py), 2), ("other", str(plain_py), 3), ("x", str(plain_py), 1)],
                  threads=("MainThread", "worker"))
    done = run_cytool("report", clean, "-o", tmp_path / "clean.html", timeout=120)
    assert done.returncode == 0, done.stderr
    reference = page_elements((tmp_path / "clean.html").read_text(encoding="utf-8"))
    elements = page_elements(page)
    # the same elements as a page made from harmless names: nothing was injected
    assert sorted(tag for tag, _ in elements.tags) == sorted(tag for tag, _ in reference.tags)
    assert not any(tag == "img" for tag, _ in elements.tags)
    assert not any(name.startswith("on") for _, attrs in elements.tags for name, _ in attrs)
    assert sum(tag == "script" for tag, _ in elements.tags) == 2
    assert not any(c in page for c in "\x1b\x07\x0b\x00")
    # the names are there, as text (control characters as visible escapes)
    text = "".join(elements.text)
    assert "</script><script>alert(1)</script>\"'><img src=x onerror=alert(2)>\\x1b[31m\\x07\\x0b" in text
    assert "y = '</script><script>alert(4)</script>'" in text
    # the flame graph's data is JSON that the page's script reads back exactly
    data = json.loads(elements.script_text[0])
    assert any(frame[0] == HOSTILE_NAME for frame in data["frames"])
    assert any(frame[1] == str(hostile_py) for frame in data["frames"])


def test_terminal_table_prints_no_control_characters(run_cytool: RunCytool, tmp_path: Path) -> None:
    script = tmp_path / "ok.py"
    script.write_text("a = 1\nb = '\x1b]0;pwned\x07\x1b[2J'\n")
    capture = tmp_path / "ctl.cytrace"
    write_capture(capture, [("fn\x1b[31mred\x1b[0m", str(script), 2)], threads=("Main\x1b[2J",))
    done = run_cytool("report", capture, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    assert "fn\\x1b[31mred\\x1b[0m" in done.stdout
    assert "b = '\\x1b]0;pwned\\x07\\x1b[2J'" in done.stdout


def test_collapsed_stacks_and_errors_print_no_control_characters(run_cytool: RunCytool, tmp_path: Path) -> None:
    capture = tmp_path / "ctl.cytrace"
    write_capture(capture, [("fn\x1b[31m", "/nonexistent/x.py", 2)], threads=("T\x1b]0;x\x07",))
    done = run_cytool("report", capture, "-f", "collapsed", timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "fn\\x1b[31m (x.py:2) 16\n"
    done = run_cytool("report", capture, "--threads", "nosuch", timeout=120)
    assert done.returncode == 2 and "no thread named 'nosuch'" in done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr and "T\\x1b]0;x\\x07" in done.stderr


def test_symboliser_never_opens_a_fifo_beside_a_real_module(run_cytool: RunCytool, tmp_path: Path) -> None:
    """A real module whose cython_debug XML (read for Cython names) and whose .pyx (read to
    count its lines) are FIFOs: the report finishes, the module's frames still symbolised."""
    import shutil

    from cytool.build import BuildOptions, build_module

    source = tmp_path / "fifomod.pyx"
    source.write_text(PYX)
    module = build_module(source, BuildOptions(opt_level="2"))
    folder = tmp_path / "copy"
    (folder / "cython_debug").mkdir(parents=True)
    copy = folder / module.module_path.name
    shutil.copy(module.module_path, copy)
    os.mkfifo(folder / "cython_debug" / "cython_debug_info_fifomod")
    source.unlink()
    os.mkfifo(source)
    from cytool.elf import build_id

    capture = tmp_path / "fifo_xml.cytrace"
    text_start = 0x7F0000000000
    with CaptureWriter(capture) as w:
        w.object(1, text_start, str(copy), bytes.fromhex(build_id(copy) or ""), [(text_start, text_start + 0x100000)])
        w.stack(1, [(text_start + 0x1000) << 1])
        w.thread(0, 100, "MainThread")
        w.batch(0, 0, [("malloc", 1, 0x1000, 16, 1)])
        w.end(10)
    done = run_cytool("report", capture, "--native", "-f", "collapsed", timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith(" 16\n") and "Traceback" not in done.stderr


def test_develop_build_sources_are_verified_and_changes_noticed(run_cytool: RunCytool, tmp_path: Path) -> None:
    """`cytool develop` records its sources' digests (and its in-place C file's) in the
    module index: the report checks a project's .pyx against them like a cytool build's."""
    import shutil

    project = tmp_path / "stapp"
    shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "projects" / "stapp", project)
    done = run_cytool("develop", cwd=project)
    assert done.returncode == 0, done.stderr
    capture = project / "run.cytrace"
    done = run_cytool("profile", "-o", capture, "--no-summary", "-c", "from app import api; api.churn(100, 1024)",
                      cwd=project)
    assert done.returncode == 0, done.stderr
    core = project / "app" / "core.pyx"
    # the DWARF of a build run in the project names "app/core.pyx", relative to the folder
    # it was compiled in (DW_AT_comp_dir): the same file wherever the report runs
    name = str(core)
    before = json.loads(run_cytool("report", capture, "-f", "json", cwd=tmp_path).stdout)
    assert before["sources"][name]["state"] == "verified"
    hot = [l for l in before["lines"] if l["file"] == name and "MAKE_BLOCK" in l["source"]]
    assert len(hot) == 1, before["lines"][:4]

    core.write_text("# one more line\n" + core.read_text())
    document = json.loads(run_cytool("report", capture, "-f", "json", cwd=tmp_path).stdout)
    assert document["sources"][name]["state"] == "changed"
    line = next(l for l in document["lines"] if l["file"] == name and l["line"] == hot[0]["line"])
    assert "MAKE_BLOCK" in line["source"]  # as built, from app/core.c (unchanged since the build)

    (project / "app" / "core.c").write_text((project / "app" / "core.c").read_text() + "\n/* regenerated */\n")
    document = json.loads(run_cytool("report", capture, "-f", "json", cwd=tmp_path).stdout)
    line = next(l for l in document["lines"] if l["file"] == name and l["line"] == hot[0]["line"])
    assert line["source"] == ""  # the C file changed too: nothing it says is trusted
