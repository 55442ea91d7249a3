"""Encrypted files benchmark: the same CSV ingested plain and encrypted, side by side.

    python -m benchmarks.bench_encrypt [--rows 1000000] [--repeat 5] [--gzip]

The file is a generated Reddit-comments CSV; its encrypted twin is made with ``simbdp
encrypt``'s code (Tink StreamingAead, AES256_GCM_HKDF_1MB) before the clock starts. Each run
is a fresh platform home (so the ledger never sees the content twice) with the same profile
(a keyset registered), the file dropped into staging and ingested by ``simbdp serve``'s
manager into DuckDB, unkeyed, without an app: the fastest path, so decryption weighs most.
Runs alternate plain / encrypted; the median of each is reported with the ratio (target: the
encrypted file at >= 70% of the plain file's rows/s), the bare decryption speed and the peak
memory (PSS) of the manager and its workers.

The reader alone (``read_batches`` with the worker's options, in this process) is measured the
same way, in wall-clock and in CPU seconds (all threads): on a shared machine the CPU time is
the steadier figure of what decryption costs.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import DATA, peak_rss, reddit_csv
from simbdp.batch import BatchIngestManager
from simbdp.crypto.files import FileDecryptor, encrypt_file
from simbdp.crypto.keyset import load_keyset, new_keyset, save_keyset
from simbdp.formats import ReadOptions, detect_format, is_encrypted, read_batches
from simbdp.state import StateStore
from simbdp.testing import make_platform, tenant_profile


def _run(source: Path, keyset: Path) -> tuple[float, int, float]:
    """Ingest one file in a fresh home: (seconds, rows loaded, peak MB)."""
    DATA.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        home = Path(tmp) / "home"
        (home / "keys").mkdir(parents=True)
        shutil.copyfile(keyset, home / "keys" / "acme.json")
        (home / "keys" / "acme.json").chmod(0o600)
        platform = make_platform(home, [tenant_profile(
            "acme", encryption={"keyset": "keys/acme.json"})], workers=1, stable_secs=0.0,
            rescan_secs=0.2)
        store = StateStore.open(platform.config)
        manager = BatchIngestManager(platform, store)
        shutil.copyfile(source, platform.config.staging_dir("acme") / source.name)
        with peak_rss() as mem:
            started = time.time()
            manager.serve(threading.Event(), idle_exit=True)
        [rec] = store.records()
        if rec["outcome"] != "processed":
            raise SystemExit(f"benchmark ingestion failed: {rec['reason']}")
        return rec["ended_at"] - started, int(rec["rows_loaded"]), float(mem["peak_mb"])


def _decrypt_mb_s(enc: Path, keyset: Path) -> float:
    ks = load_keyset(keyset, "bench")
    t0 = time.perf_counter()
    n = 0
    with FileDecryptor(ks).open(enc, enc.name) as f:
        while chunk := f.read(1024**2):
            n += len(chunk)
    return n / 1e6 / (time.perf_counter() - t0)


def _read_only(path: Path, keyset: Path) -> tuple[float, float, int]:
    """(wall secs, CPU secs, rows) of reading the file as the worker does."""
    ftype, comp = detect_format(path.name)  # type: ignore[misc]
    decrypt = FileDecryptor(load_keyset(keyset, "bench")) if is_encrypted(path.name) else None
    options = ReadOptions(ftype, comp, block_bytes=1024**2, decrypt=decrypt)
    t0, c0 = time.perf_counter(), time.process_time()
    rows = sum(b.num_rows for b in read_batches(path, options))
    return time.perf_counter() - t0, time.process_time() - c0, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--gzip", action="store_true", help="compare .csv.gz and .csv.gz.enc")
    args = ap.parse_args()
    csv = reddit_csv(args.rows)
    with tempfile.TemporaryDirectory(dir=DATA) as tmp:
        work = Path(tmp)
        keyset = work / "keyset.json"
        save_keyset(new_keyset(), keyset)
        plain = work / ("comments.csv.gz" if args.gzip else "comments.csv")
        if args.gzip:
            with csv.open("rb") as src, gzip.open(plain, "wb", compresslevel=6) as dst:
                shutil.copyfileobj(src, dst, 1024**2)
        else:
            shutil.copyfile(csv, plain)
        enc = plain.with_name(plain.name + ".enc")
        encrypt_file(load_keyset(keyset, "bench"), plain, enc)
        runs: dict[str, list[tuple[float, int, float]]] = {"plain": [], "encrypted": []}
        for _ in range(args.repeat):
            runs["plain"].append(_run(plain, keyset))
            runs["encrypted"].append(_run(enc, keyset))
        reads: dict[str, list[tuple[float, float, int]]] = {"plain": [], "encrypted": []}
        for _ in range(max(3, args.repeat)):
            reads["plain"].append(_read_only(plain, keyset))
            reads["encrypted"].append(_read_only(enc, keyset))
        mb_s = _decrypt_mb_s(enc, keyset)
        size_mb = csv.stat().st_size / 1e6
    rate = {}
    print(f"{args.rows} rows, {size_mb:.0f} MB of CSV{' (gzip)' if args.gzip else ''}; "
          f"median of {args.repeat} runs each, alternating")
    print(f"{'file':<10} {'secs':>7} {'rows/s':>10} {'peak MB':>8}")
    for kind, rs in runs.items():
        secs = statistics.median(r[0] for r in rs)
        rows = rs[0][1]
        if rows != args.rows:
            raise SystemExit(f"{kind}: {rows} rows loaded, expected {args.rows}")
        rate[kind] = rows / secs
        print(f"{kind:<10} {secs:>7.2f} {rate[kind]:>10,.0f} "
              f"{max(r[2] for r in rs):>8.0f}")
    ratio = rate["encrypted"] / rate["plain"]
    print(f"encrypted / plain: {ratio:.0%} (target >= 70%)")
    print("reader alone (read_batches, this process):")
    print(f"{'file':<10} {'wall s':>7} {'rows/s':>10} {'CPU s':>7} {'rows/CPU-s':>11}")
    per_cpu = {}
    for kind, got in reads.items():
        wall = statistics.median(r[0] for r in got)
        cpu = statistics.median(r[1] for r in got)
        per_cpu[kind] = got[0][2] / cpu
        print(f"{kind:<10} {wall:>7.2f} {got[0][2] / wall:>10,.0f} {cpu:>7.2f} "
              f"{per_cpu[kind]:>11,.0f}")
    print(f"reader, encrypted / plain rows per CPU-second: "
          f"{per_cpu['encrypted'] / per_cpu['plain']:.0%}")
    print(f"bare decryption (Tink StreamingAead, 1 MiB reads): {mb_s:,.0f} MB/s")


if __name__ == "__main__":
    main()
