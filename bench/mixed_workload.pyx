# The mixed workload of bench/bench_stream_report.py and bench/bench_scale.py: heap blocks of
# mixed sizes, a realloc-grown buffer, Python containers (about 2.2 events an iteration).
# usage: cytool run bench/mixed_workload.pyx -- ITERATIONS
from libc.stdlib cimport malloc, free, realloc

cdef inline void* grab(size_t n):
    return malloc(n)

def mixed(long n):
    cdef void** ring = <void**>malloc(4096 * sizeof(void*))
    cdef long i, j
    cdef unsigned long x = 12345
    cdef size_t cap = 64, used = 0
    cdef char* buf = <char*>malloc(cap)
    keep = []
    for j in range(4096):
        ring[j] = NULL
    for i in range(n):
        x = x * 6364136223846793005UL + 1442695040888963407UL
        j = (x >> 33) & 4095
        free(ring[j])
        if i & 1:
            ring[j] = grab(16 + ((x >> 20) % 1985))
        else:
            ring[j] = malloc(16 + ((x >> 40) % 200))
        used += 48
        if used > cap:
            cap = cap * 2 if cap < (1 << 20) else 64
            if cap == 64:
                used = 0
            buf = <char*>realloc(buf, cap)
        if i % 8 == 0:
            d = {"a": i, "b": [i] * (40 + (i & 127)), "c": str(i)}
            keep.append(d)
            if len(keep) > 2000:
                del keep[:1000]
    for j in range(4096):
        free(ring[j])
    free(ring)
    free(buf)

if __name__ == "__main__":
    import sys
    mixed(int(sys.argv[1]))
