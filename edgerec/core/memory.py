"""The heap a training process runs in: freed blocks kept for the next batch, released after
every epoch and whenever the process holds more than its share of the machine's memory (glibc;
elsewhere a no-op). `training.fit` trains inside `reuse_freed_memory`."""

from __future__ import annotations

import contextlib
import ctypes
import os

# Share of the machine's memory a training process may keep in freed heap blocks before
# releasing them mid-epoch (reuse_freed_memory): 24 GB -> 6 GB, so two trainings fit beside
# each other.
HEAP_SHARE = 0.25


@contextlib.contextmanager
def reuse_freed_memory(limit_share: float = HEAP_SHARE):
    """Keep freed blocks in the process's heap while training, up to a limit (glibc only;
    elsewhere a no-op).

    PyTorch's CPU allocator calls malloc/free for every activation; glibc hands blocks over its
    mmap threshold back to the kernel and maps them again on the next batch, so each batch
    page-faults its activations in anew (issue 18 saw a third of an ML-1M epoch's CPU time in
    the kernel). Raising the mmap and trim thresholds keeps them; on packed batches, one epoch
    (benchmarks/train_speed.py, "packed" -> "after", 2-core AVX2 EPYC): 2.1M teacher on ML-100K
    27.1 -> 24.8 s, default student 7.6 -> 5.2 s, ML-1M teacher 74.5 -> 61.4 s. The thresholds
    go back, and the heap is trimmed, when training ends. Done with ctypes because PyTorch
    exposes no allocator setting for the CPU.

    Yields a `Heap`: `fit` calls `release()` (malloc_trim: free memory back to the kernel) after
    every epoch and `check()` after every step, which releases too once the process holds more
    than `limit_share` of the machine's memory (and 1.25x what it held after the last release).
    Without that cap the kept blocks grew with fragmentation: a 60-epoch ML-1M student swung
    between 4 and 19 GB, and two ML-1M trainings beside each other were OOM-killed on a 24 GB
    machine (the hidden-256 teacher at 15.5 GB). `benchmarks/train_memory.py` (4-epoch ML-1M
    distillation, one thread, AMX Xeon, the other core busy): with the cap 48.4 s per epoch at
    6.48 GB peak, without it 45.3 s / 8.39 GB, a 64 MB mmap threshold 54.3 s / 8.41 GB, glibc's
    defaults 68.2 s / 4.77 GB.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt, trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield Heap(None, 0)
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # noqa: N806 (glibc's names)
    mallopt(M_MMAP_THRESHOLD, 1 << 30)
    mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    try:
        yield Heap(trim, int(limit_share * physical_memory()))
    finally:
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)  # glibc's defaults
        mallopt(M_TRIM_THRESHOLD, 128 * 1024)
        trim(0)


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def resident_bytes() -> int:
    """This process's resident set (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class Heap:
    """What `reuse_freed_memory` yields: release the heap's free memory now, or when over a limit."""

    def __init__(self, trim, limit: int):
        self._trim, self.limit, self._after_release, self.releases = trim, limit, 0, 0

    def release(self) -> None:
        if self._trim is not None:
            self._trim(0)
            self._after_release = resident_bytes()
            self.releases += 1

    def check(self) -> None:
        if self._trim is not None and self.limit:
            held = resident_bytes()
            if held > self.limit and held > 1.25 * self._after_release:
                self.release()
