# cython: language_level=3
# An allocation-heavy workload for bench/bench_profile.py: each of T threads makes N small
# mallocs (16..271 bytes) without the GIL, keeping a ring of 4096 live blocks: every new
# block frees the one it replaces, so there are about as many frees as mallocs.
# usage: cytool run examples/bench_alloc.pyx -- N T
import sys
import threading

from libc.stdlib cimport free, malloc
from libc.string cimport memset


cdef void churn(long n) noexcept nogil:
    cdef void *ring[4096]
    cdef long i
    cdef size_t size
    memset(ring, 0, sizeof(ring))
    for i in range(n):
        size = 16 + (i * 7919) % 256
        free(ring[i & 4095])
        ring[i & 4095] = malloc(size)
        (<char *>ring[i & 4095])[0] = 1
    for i in range(4096):
        free(ring[i])


def work(long n):
    with nogil:
        churn(n)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    nthreads = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    threads = [threading.Thread(target=work, args=(n,)) for _ in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
