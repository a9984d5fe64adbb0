"""Benchmarks: ``python -m bench [NAME ...]`` prints one table and writes bench/results.json.

Each module ``bench/bench_<name>.py`` exposes ``run(quick: bool) -> list[dict]``; a row is
{"benchmark", "metric", "value", "unit", "note"}. Timings are medians of several runs in one
process, so ratios between rows of one run are meaningful even on a noisy machine.
"""
import statistics
import time


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(benchmark: str, metric: str, value, unit: str = "", note: str = "") -> dict:
    if isinstance(value, float):
        value = round(value, 4)
    return {"benchmark": benchmark, "metric": metric, "value": value, "unit": unit, "note": note}
