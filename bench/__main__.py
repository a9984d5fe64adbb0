"""python -m bench [--quick] [NAME ...]: run benchmarks, print a table, update bench/results.json."""
import argparse
import importlib
import inspect
import json
import pkgutil
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules([str(HERE)])
                  if m.name.startswith("bench_"))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {available()})")
    p.add_argument("--quick", action="store_true", help="fewer repeats (for smoke tests)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--minutes", type=float, help="how long a timed benchmark runs (soak)")
    p.add_argument("--out", default=str(HERE / "results.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    names = a.names or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        p.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    rows = []
    for name in names:
        t = time.time()
        mod = importlib.import_module(f"bench.bench_{name}")
        timed = a.minutes and "minutes" in inspect.signature(mod.run).parameters
        rows += mod.run(quick=a.quick, **({"minutes": a.minutes} if timed else {}))
        print(f"[{name}: {time.time() - t:.0f} s]", flush=True)
    width = max(len(r["benchmark"]) + len(r["metric"]) for r in rows) + 3 if rows else 20
    print(f"\n{'benchmark / metric':<{width}} {'value':>12}  unit   note")
    for r in rows:
        print(f"{r['benchmark'] + ' / ' + r['metric']:<{width}} {r['value']!s:>12}  {r['unit']:<6} {r['note']}")
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "threads": a.threads, "torch": torch.__version__,
            "cpu": platform.processor() or platform.machine(), "quick": a.quick}
    # rows of benchmarks not run this time stay (each benchmark's rows come from its latest run)
    out = Path(a.out)
    old = json.loads(out.read_text()) if out.is_file() else {}
    fresh = {r["benchmark"] for r in rows}
    kept = [r for r in old.get("rows", []) if r.get("benchmark") not in fresh]
    meta["kept_from_earlier_runs"] = sorted({r["benchmark"] for r in kept})
    out.write_text(json.dumps({"meta": meta, "rows": kept + rows}, indent=1))
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
