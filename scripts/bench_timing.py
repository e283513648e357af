"""Timing helper shared by the benchmark scripts (plain Python, importable from any interpreter,
including the reference's own venv that benchmark_ram.py runs its torch side in)."""
import statistics
import time


def timed(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn`` after one warm-up call (graph compilation, allocator)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
