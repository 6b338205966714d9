/* test_trace_lib.c: a library the tracer tests dlopen while tracing (mode "dlopen" of
 * test_trace_helper): its allocations must be recorded, with this library on the stack. */
#include <stdlib.h>
#include <string.h>

void *volatile test_trace_lib_sink;

__attribute__((noinline, visibility("default"))) void lib_alloc(size_t n, size_t size) {
    void **blocks = malloc(n * sizeof *blocks);
    for (size_t i = 0; i < n; i++) {
        blocks[i] = malloc(size);
        test_trace_lib_sink = blocks[i];
        memset(blocks[i], 2, 8);
    }
    for (size_t i = 0; i < n; i++) free(blocks[i]);
    free(blocks);
}
