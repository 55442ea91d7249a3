"""What the sandbox costs per app process: start-up to the first reply, confined vs not.

    python -m benchmarks.bench_sandbox [--runs 15]

Each run starts an :class:`~simbdp.apps.AppRunner` for an identity app and times it until
the reply to a first 1,000-row call, as a batch worker does once per file (the probe of
bubblewrap included: a worker is a fresh process, so it probes once). Confined (bubblewrap +
cgroup) and unconfined runs alternate; the medians and their difference are printed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from simbdp.apps import AppContext, AppRunner, runner, sandbox
from simbdp.profiles.models import AppSpec
from simbdp.profiles.platform import AppsSettings

SPEC = AppSpec(name="identity", entrypoint="w:identity", tables=["t"], memory_mb=1024)
CTX = AppContext(tenant="bench", app="identity", source="f.csv", tables=("t",))
DATA = pa.table({"id": pa.array(range(1000)), "s": pa.array(["text"] * 1000)})


def first_reply(app_dir: Path, confined: bool) -> float:
    sandbox.sandbox_problem.cache_clear()
    real = sandbox.sandbox_problem
    runner.sandbox_problem = real if confined else (lambda: "benchmark: unconfined")
    try:
        t0 = time.perf_counter()
        with AppRunner(app_dir, SPEC, "bench", AppsSettings(unconfined=True)) as r:
            assert r.confined == confined
            r.call(DATA, CTX)
            return time.perf_counter() - t0
    finally:
        runner.sandbox_problem = real


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        app_dir = Path(tmp)
        (app_dir / "w.py").write_text("def identity(data, ctx):\n    return data\n")
        first_reply(app_dir, True)  # warm the page cache
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.runs):
            for confined in (False, True):
                times[confined].append(first_reply(app_dir, confined))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"app process start-up to first reply, median of {args.runs} alternated runs:")
    print(f"  unconfined          {med[False]:7.1f} ms")
    print(f"  bubblewrap + cgroup {med[True]:7.1f} ms")
    print(f"  sandbox cost        {med[True] - med[False]:7.1f} ms per app process")


if __name__ == "__main__":
    main()
