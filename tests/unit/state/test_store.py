import multiprocessing as mp
from pathlib import Path

import pytest

from simbdp.observe.report import batch_summary
from simbdp.profiles import PlatformConfig
from simbdp.state import MAX_REASON_CHARS, StateStore, today


def _reserve(home: str, n: int, out) -> None:  # type: ignore[no-untyped-def]
    store = StateStore.open(PlatformConfig(home=Path(home)))
    out.put(sum(store.reserve_files("acme", "2026-01-01", 1, 10, 50, 10_000) for _ in range(n)))


def test_quota_reservation_never_overshoots_across_processes(tmp_path):
    StateStore.open(PlatformConfig(home=tmp_path))
    q = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_reserve, args=(str(tmp_path), 40, q))
             for _ in range(3)]
    for p in procs:
        p.start()
    got = sum(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join()
    assert got == 50
    store = StateStore.open(PlatformConfig(home=tmp_path))
    assert store.usage("acme", "2026-01-01")["files"] == 50


def test_bytes_quota_and_release(tmp_path):
    store = StateStore.open(PlatformConfig(home=tmp_path))
    day = today()
    assert store.reserve_files("t", day, 1, 600, 10, 1000)
    assert not store.reserve_files("t", day, 1, 600, 10, 1000)
    store.release_files("t", day, 1, 600)
    assert store.reserve_files("t", day, 1, 600, 10, 1000)


def test_records_lifecycle_and_interrupt(tmp_path):
    store = StateStore.open(PlatformConfig(home=tmp_path))
    a = store.start_record("t", "batch", "a.csv", bytes=5)
    b = store.start_record("t", "batch", "b.csv", bytes=5)
    store.finish_record(a, "processed", rows_loaded=3)
    interrupted = store.interrupt_running("stopped")
    assert [r["id"] for r in interrupted] == [b]
    assert store.record(b)["outcome"] == "interrupted"
    assert {r["source"] for r in store.records("t")} == {"a.csv", "b.csv"}
    assert store.records("t", outcome="processed")[0]["rows_loaded"] == 3


def test_waiting_records_are_reported_and_interrupted_after_a_stop(tmp_path):
    store = StateStore.open(PlatformConfig(home=tmp_path))
    a = store.start_record("t", "batch", "a.csv", bytes=5)
    store.mark_record(a, "waiting", "PostgreSQL sink unreachable")
    assert store.record(a)["outcome"] == "waiting"
    [s] = batch_summary(store, "t")
    assert s.waiting == 1 and s.failed == 0
    assert [r["id"] for r in store.interrupt_running("stopped")] == [a]
    assert store.record(a)["outcome"] == "interrupted"


def test_long_reasons_are_cut_in_records(tmp_path):
    store = StateStore.open(PlatformConfig(home=tmp_path))
    reason = "unexpected columns " + ", ".join(f"c{i}" for i in range(20_000))
    a = store.start_record("t", "batch", "a.csv")
    store.finish_record(a, "failed", reason=reason)
    got = store.record(a)["reason"]
    assert len(got) <= MAX_REASON_CHARS and got.startswith("unexpected columns c0, c1")
    assert "more characters in the reason file" in got


def test_report_mib_per_sec_counts_decompressed_bytes_per_second_of_work(tmp_path):
    store = StateStore.open(PlatformConfig(home=tmp_path))
    a = store.start_record("t", "batch", "a.csv.gz", bytes=2**20)
    store.finish_record(a, "processed", decompressed_bytes=10 * 2**20, read_secs=1.0,
                        app_secs=0.5, write_secs=0.5)
    store.db.execute("UPDATE ingestions SET ended_at = started_at + 6 WHERE id = ?", [a])
    [s] = batch_summary(store, "t")
    assert s.bytes == 2**20 and s.decompressed_bytes == 10 * 2**20
    assert s.mib_per_sec == 5.0  # 10 MiB in 2 s of work, not in the 6 s since accepted


def test_report_separates_queue_wait_from_work(tmp_path):
    # the Parquet file: 6.32 s from accepted to done, of which 1.27 s at work
    store = StateStore.open(PlatformConfig(home=tmp_path))
    a = store.start_record("t", "batch", "a.parquet", bytes=1000)
    store.finish_record(a, "processed", read_secs=0.27, app_secs=0.0, write_secs=1.0)
    store.db.execute("UPDATE ingestions SET ended_at = started_at + 6.32, "
                     "work_started_at = started_at + 4.9 WHERE id = ?", [a])
    [s] = batch_summary(store, "t")
    assert s.mean_secs == pytest.approx(6.32)
    assert s.work_mean_secs == pytest.approx(1.27)
    assert s.queue_mean_secs == pytest.approx(4.9)  # measured: accepted -> taken by a worker
    # a record of an older release has no work_started_at: the wait is derived
    store.db.execute("UPDATE ingestions SET work_started_at = NULL WHERE id = ?", [a])
    [s] = batch_summary(store, "t")
    assert s.queue_mean_secs == pytest.approx(5.05)
