# cython: language_level=3
# The workload of bench_profile.py's SIGKILL loss window: it allocates until killed.
# "busy": one thread mallocs and frees as fast as it can (a ring of 256 live blocks);
# "paced": one malloc and free every 100 us. It prints "ready" once it allocates.
# usage: cytool profile bench/kill_workload.pyx -- busy|paced
import sys
import time

from libc.stdlib cimport free, malloc

cdef extern from *:
    """
    static void *volatile kill_workload_sink;
    static void *kill_workload_keep(void *p) { kill_workload_sink = p; return p; }
    """
    void *kill_workload_keep(void *p) nogil  # (so that the compiler cannot drop a malloc/free pair)


cdef void busy() noexcept nogil:
    cdef void *ring[256]
    cdef long i = 0
    for i in range(256):
        ring[i] = NULL
    i = 0
    while True:
        free(ring[i & 255])
        ring[i & 255] = malloc(16 + (i * 7919) % 1024)
        (<char *>ring[i & 255])[0] = 1
        i += 1


def paced():
    cdef void *p
    cdef long i = 0
    while True:
        p = kill_workload_keep(malloc(16 + (i * 7919) % 1024))
        free(p)
        i += 1
        time.sleep(0.0001)


if __name__ == "__main__":
    print("ready", flush=True)
    if sys.argv[1] == "busy":
        with nogil:
            busy()
    else:
        paced()
