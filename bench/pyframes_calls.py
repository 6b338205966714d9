"""Python half of bench/pyframes_workload.pyx: recursive Python calls that build strings
and lists (most of them small, so pymalloc's; every 4th call joins a string big enough
for malloc, > 512 bytes), called from Cython."""


def leaf(i):
    text = "item-%d" % i
    return text + text[::-1]


def build(i):
    parts = [leaf(j) for j in range(i % 8 + 1)]
    if i % 4 == 0:
        return "|".join(parts) * 64  # > 512 bytes: malloc
    return "".join(parts)


def recurse(depth, i):
    if depth <= 0:
        return build(i)
    return recurse(depth - 1, i)
