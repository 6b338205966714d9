#!/usr/bin/env bash
# `make realworld`: cytool on real projects' sdists from PyPI, from their unpacked folders,
# with only documented commands and no edited file. Not part of `make test` (network,
# ~15 minutes). Each check prints PASS or FAIL; the exit status is the number of FAILs.
#   REALWORLD_DIR  where to download and unpack (default: a new temporary folder)
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${VENV_BIN:-$REPO/.venv/bin}
export PATH="$BIN:$PATH"
WORK=${REALWORLD_DIR:-$(mktemp -d /tmp/cytool-realworld.XXXXXX)}
export CYTOOL_CACHE_DIR="$WORK/cache"
mkdir -p "$WORK"
FAILS=0
LOG="$WORK/log"
mkdir -p "$LOG"

step() { echo; echo "=== $*"; }
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
# run NAME CMD...: run a command, keep its output in $LOG/NAME, show its last lines on failure
run() {
  local name=$1; shift
  echo "\$ $*"
  if "$@" > "$LOG/$name" 2>&1; then return 0; fi
  local rc=$?; tail -25 "$LOG/$name"; return $rc
}

# Pinned releases, so that the run is repeatable. memray 1.19.1 is its last release built
# by setup.py (1.20 moved to CMake and scikit-build-core, which `cytool develop` does not
# drive yet: it says so).
MSGPACK=msgpack==1.2.4
CYTOOLZ=cytoolz==1.2.0
MEMRAY=memray==1.19.1

step "what the projects need to build and run (PyPI; Debian packages come from make deps)"
run pip python -m pip install -q toolz pytest pkgconfig "setuptools>=78.1.1" || fail "installing the projects' build requirements"
cd "$WORK"
run download python -m pip download -q --no-deps --no-binary :all: "$MSGPACK" "$CYTOOLZ" "$MEMRAY" || { fail "download"; exit 99; }
for f in *.tar.gz; do tar xzf "$f"; done
cp -r msgpack-1.2.4 msgpack-plain   # a second copy, built by its own setup.py without cytool

step "cytoolz: every .pyx builds (cytoolz's modules cimport each other), and import cytoolz works from the folder"
cd "$WORK/cytoolz-1.2.0"
if run cytoolz-build cytool build cytoolz/*.pyx; then pass "cytool build cytoolz/*.pyx"; else fail "cytool build cytoolz/*.pyx"; fi
if run cytoolz-import cytool run -c "import cytoolz; print(cytoolz.merge({1: 2}, {3: 4}), cytoolz.curried.get(1)([5, 6]))" \
   && grep -q "{1: 2, 3: 4} 6" "$LOG/cytoolz-import"; then
  pass "import cytoolz (modules built on import, under their package names)"
else fail "import cytoolz"; fi

step "msgpack: _cmsgpack.pyx builds with the settings its setup.py gives (include_dirs=['.'])"
cd "$WORK/msgpack-1.2.4"
if run msgpack-build cytool build -v msgpack/_cmsgpack.pyx && grep -q -- "-I$WORK/msgpack-1.2.4 " "$LOG/msgpack-build"; then
  pass "cytool build msgpack/_cmsgpack.pyx (include dir from setup.py)"
else fail "cytool build msgpack/_cmsgpack.pyx"; fi

step "memray: _memray.pyx builds (C++, its sources and libraries from its setup.py)"
cd "$WORK/memray-1.19.1"
# memray's setup.py builds its vendored libbacktrace in build_ext.run(); cytool reads the
# settings of setup.py without running build_ext, so this one step is done by hand (the
# same configure/make that setup.py runs):
B=$(mktemp -d)
run libbacktrace bash -c "cd $B && $PWD/src/vendor/libbacktrace/configure --with-pic --prefix=$PWD/src/vendor/libbacktrace/install --includedir=$PWD/src/vendor/libbacktrace/install/include/libbacktrace && make -j2 && make install" \
  || fail "building memray's vendored libbacktrace"
if run memray-build cytool build src/memray/_memray.pyx && grep -q "built memray._memray" "$LOG/memray-build"; then
  pass "cytool build src/memray/_memray.pyx"
else fail "cytool build src/memray/_memray.pyx"; fi

step "cytool develop on msgpack, then cytool profile -m pytest test/: the report names _packer.pyx and _unpacker.pyx lines"
cd "$WORK/msgpack-1.2.4"
if run msgpack-develop cytool develop -j 2; then pass "cytool develop (msgpack)"; else fail "cytool develop (msgpack)"; fi
if run msgpack-pytest cytool profile -o "$WORK/msgpack-tests.cytrace" -m pytest test/ -q -p no:cacheprovider; then
  pass "cytool profile -m pytest test/ passes"
else fail "cytool profile -m pytest test/"; fi
if grep -q "_packer.pyx:" "$LOG/msgpack-pytest" && grep -q "_unpacker.pyx:" "$LOG/msgpack-pytest"; then
  pass "the report names msgpack/_packer.pyx and msgpack/_unpacker.pyx lines"
else fail "the report does not name _packer.pyx and _unpacker.pyx lines"; fi

step "msgpack built by its own setup.py (no cytool): cytool debug stops at cy-break msgpack._cmsgpack.Packer.pack, cy-bt names it at its .pyx line"
cd "$WORK/msgpack-plain"
cat > "$WORK/msgpack_script.py" <<'PY'
import msgpack

data = {"numbers": list(range(50)), "text": "hello" * 10, "nested": [{"a": 1}, {"b": [1, 2, 3]}]}
packed = msgpack.packb(data)
print("round trip", msgpack.unpackb(packed) == data)
PY
printf 'cy-run\ncy-bt\ncy-locals\ncy-cont\n' > "$WORK/msgpack-plain.gdb"
run msgpack-plain-build python setup.py build_ext --inplace || fail "python setup.py build_ext --inplace (msgpack)"
if run msgpack-plain-debug env PYTHONPATH="$WORK/msgpack-plain" cytool debug --batch -b msgpack._cmsgpack.Packer.pack \
     -x "$WORK/msgpack-plain.gdb" "$WORK/msgpack_script.py" \
   && grep -Eq "^Cython breakpoint 1, _packer.pyx:[0-9]+ in Packer.pack\(\)" "$LOG/msgpack-plain-debug" \
   && grep -Eq "^#0 \*_packer.pyx:[0-9]+ in Packer.pack\(\)" "$LOG/msgpack-plain-debug" \
   && grep -q "round trip True" "$LOG/msgpack-plain-debug"; then
  pass "cy-break msgpack._cmsgpack.Packer.pack and cy-bt on a plain setuptools build"
else fail "cy-break by Cython name on msgpack built by setup.py (see $LOG/msgpack-plain-debug)"; fi

step "msgpack built by its own setup.py (no cytool): cytool profile script.py names its Cython functions at _packer.pyx lines"
cd "$WORK/msgpack-plain"
cat > "$WORK/msgpack_profile.py" <<'PY'
import msgpack

data = {"numbers": list(range(200)), "text": "hello" * 100, "nested": [{"a": 1}, {"b": [1, 2, 3]}]}
for _ in range(200):
    packer = msgpack.Packer()
    packed = packer.pack(data)
    assert msgpack.unpackb(packed) == data
print("packed", len(packed), "bytes")
PY
# (the build_ext --inplace of the step above made msgpack-plain's modules)
if run msgpack-plain-profile env PYTHONPATH="$WORK/msgpack-plain" cytool profile -o "$WORK/msgpack-plain.cytrace" \
     "$WORK/msgpack_profile.py" \
   && grep -q "packed" "$LOG/msgpack-plain-profile" \
   && run msgpack-plain-report cytool report "$WORK/msgpack-plain.cytrace" -f json \
   && python - "$LOG/msgpack-plain-report" <<'PY'
import json, sys
lines = json.load(open(sys.argv[1]))["lines"]
packer = [l for l in lines if l["kind"] == "pyx" and l["file"].endswith("msgpack/_packer.pyx")
          and l["function"].startswith("msgpack._cmsgpack.Packer.") and l["line"] > 0]
for l in packer[:5]:
    print("%s:%d  %s  %d bytes" % (l["file"], l["line"], l["function"], l["inclusive"]["bytes"]))
sys.exit(0 if packer else 1)
PY
then
  pass "cytool profile script.py on a plain setuptools build: msgpack._cmsgpack.Packer frames at _packer.pyx lines"
else fail "Cython names and _packer.pyx lines in the profile of msgpack built by setup.py (see $LOG/msgpack-plain-report)"; fi

step "cytool develop on memray, then cytool debug script.py: cy-break memray._memray.Tracker.__enter__ stops there and cy-bt shows it"
cd "$WORK/memray-1.19.1"
cat > "$WORK/memray_script.py" <<'PY'
import os
import tempfile

import memray

path = os.path.join(tempfile.mkdtemp(), "capture.bin")
with memray.Tracker(path):
    blocks = [bytearray(1000) for _ in range(100)]
print("tracked", len(blocks), "blocks")
PY
printf 'cy-run\ncy-bt\ncy-locals\ncy-next\ncy-cont\n' > "$WORK/memray.gdb"
if run memray-develop cytool develop -j 2; then pass "cytool develop (memray)"; else fail "cytool develop (memray)"; fi
if run memray-debug env PYTHONPATH="$WORK/memray-1.19.1/src" cytool debug --batch -b memray._memray.Tracker.__enter__ \
     -x "$WORK/memray.gdb" "$WORK/memray_script.py" \
   && grep -Eq "^Cython breakpoint 1, _memray.pyx:[0-9]+ in Tracker.__enter__\(\)" "$LOG/memray-debug" \
   && grep -Eq "^#0 \*_memray.pyx:[0-9]+ in Tracker.__enter__\(\)" "$LOG/memray-debug" \
   && grep -q "self = <memray._memray.Tracker object at" "$LOG/memray-debug" \
   && grep -q "tracked 100 blocks" "$LOG/memray-debug"; then
  pass "cy-break memray._memray.Tracker.__enter__ stops there, cy-bt shows it, its locals print"
else fail "cytool debug on memray built by cytool develop (see $LOG/memray-debug)"; fi

echo
echo "realworld: $FAILS failure(s); logs in $LOG"
exit $FAILS
