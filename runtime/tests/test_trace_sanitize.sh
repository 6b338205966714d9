#!/bin/sh
# test_trace_sanitize.sh DIR: run the tracer's C test helper (built with ASan + UBSan by
# `make sanitize`) through every mode; any sanitizer report fails the run.
set -eu
dir=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
helper="$dir/test_trace_helper"
# Each mode gets SANITIZE_MODE_SECONDS (120; it takes a few). A hang names its mode and
# prints the stacks of its processes (gdb, when present) instead of running into the
# caller's timeout.
limit=$(( ${SANITIZE_MODE_SECONDS:-120} * 10 ))
children_of() { awk -v parent="$1" '$4 == parent { print $1 }' /proc/[0-9]*/stat 2>/dev/null; }
run() {
    echo "sanitize: $*"
    "$helper" "$@" > "$work/out.txt" &
    pid=$!
    tenths=0
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$tenths" -ge "$limit" ]; then
            echo "sanitize: HUNG for $((limit / 10)) s: $*"
            for p in "$pid" $(children_of "$pid"); do
                echo "sanitize: stacks of process $p"
                command -v gdb > /dev/null && gdb -p "$p" -batch -ex 'thread apply all bt 25' 2>/dev/null | grep '^#\|^Thread'
            done
            kill -9 "$pid" $(children_of "$pid") 2>/dev/null
            exit 1
        fi
        sleep 0.1
        tenths=$((tenths + 1))
    done
    status=0
    wait "$pid" || status=$?
    [ "$status" -eq 0 ] || { echo "sanitize: exit status $status: $*"; exit 1; }
}
run "$work/threads.cytrace" threads 20000 64 4
run "$work/churn.cytrace" churn 200 4
run "$work/edge.cytrace" edge
run "$work/fork0.cytrace" fork 0
run "$work/fork1.cytrace" fork 1
run "$work/signal.cytrace" signal 100000
run "$work/exit.cytrace" exit 10000
run "$work/uexit.cytrace" _exit 10000
run "$work/restart.cytrace" restart 8 4
run "$work/bursts.cytrace" bursts 4 4
run "$work/handoff.cytrace" handoff 20000
CYTOOL_PROFILE_TIME_RESOLUTION=1 run "$work/handoff-exact.cytrace" handoff 20000
CYTOOL_PROFILE_TIME_RESOLUTION=1 run "$work/threads-exact.cytrace" threads 20000 64 4
run "$work/dlopen.cytrace" dlopen "$(cd "$dir" && pwd)/libtest_trace_lib.so" 1000
run "$work/deep-fp.cytrace" deep 3000 1024 0
run "$work/deep-unwind.cytrace" deep 3000 1024 1
run "$work/names.cytrace" names
run "$work/takeover-hook.cytrace" takeover hook
run "$work/takeover-real.cytrace" takeover real
# Not forkstorm: GCC 12's ASan has no fork interceptor, so a fork while other threads are in
# its allocator can leave the child's allocator locked (seen: a child stuck in its quarantine
# lock). The plain build runs it (tests/test_tracer_runtime.py).
for f in "$work"/*.cytrace*; do
    head -c 8 "$f" | grep -q CYTRACE || { echo "sanitize: $f is not a capture"; exit 1; }
done
# read every capture back with the sanitized reader (libcyanalyze's driver), if built
if [ -x "$dir/test_analyze_driver" ]; then
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 "$dir/test_analyze_driver" "$work"/*.cytrace* > "$work/read.txt"
    if grep -v ' ok ' "$work/read.txt"; then
        echo "sanitize: a capture did not read back complete"
        exit 1
    fi
    echo "sanitize: $(wc -l < "$work/read.txt") captures read back by the sanitized reader"
fi
echo "sanitize: all modes passed"
