"""One file's ingestion, run in a worker process: read -> app -> conform -> sinks -> commit.

The rows of the file and its ledger entry (content hash) are committed in one transaction per
sink; if the process dies before that, nothing of the file is in the sink.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, closing, suppress
from pathlib import Path
from typing import Generic, TypeVar

import pyarrow as pa

from simbdp.apps import AppContext, AppRunner
from simbdp.batch.protocol import FileJob, JobResult
from simbdp.batch.warm import Warm
from simbdp.coredms.base import LedgerEntry, Sink, SinkTransaction
from simbdp.errors import (
    DuplicateIngestion,
    KeyConflict,
    Rejected,
    SimbdpError,
    TransientError,
)
from simbdp.formats import ReadOptions, ReadStats, detect_format, is_encrypted, read_batches
from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.profiles.tables import TableSpec
from simbdp.profiles.types import arrow_type
from simbdp.quality import (
    QualityStats,
    SeenValues,
    conform,
    dedupe_last,
    pass_rate_breach,
    quarantine_rows,
    write_rejected,
)
from simbdp.state.store import short_reason

__all__ = ["FileJob", "JobResult", "check_pass_rates", "content_key", "fault_point",
           "file_outputs", "nul_refused", "read_options", "rejected_rows_path", "rollback_all",
           "run_file_job", "set_outcome"]

T = TypeVar("T")


def content_key(path: Path) -> str:
    with path.open("rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def read_options(config: PlatformConfig, profile: TenantProfile, name: str,
                  app: AppSpec | None, tables: list[str]) -> ReadOptions:
    detected = detect_format(name)
    if detected is None:
        raise Rejected(f"tenant {profile.tenant_id!r}: {name!r}: unknown file type", "file_type")
    ftype, compression = detected
    if is_encrypted(name) or profile.encryption is not None:  # Tink is loaded where used
        from simbdp.crypto.files import file_decryptor

        decrypt = file_decryptor(config, profile, name)
    else:
        decrypt = None
    if app is not None:
        pinned = {c: arrow_type(t) for c, t in app.input_columns.items()}
    else:
        # the file maps straight to the table: read its columns as text and let conform cast
        # them, so a bad value rejects its row instead of failing the whole file
        pinned = {c: pa.string() for c in profile.table(tables[0]).column_names}
    limits = profile.batch
    return ReadOptions(file_type=ftype, compression=compression, csv=profile.csv,
                       column_types=pinned if ftype == "csv" or (ftype == "jsonl" and app is None)
                       else {},
                       # small blocks: pyarrow's CSV reader keeps a fixed number of blocks
                       # read ahead; they are grouped back to chunk_bytes for the app
                       block_bytes=max(256 * 1024, int(config.chunk_bytes) // 4),
                       tenant=profile.tenant_id, max_bytes=int(limits.max_file_bytes),
                       max_rows=limits.max_rows_per_file, max_columns=limits.max_columns,
                       decrypt=decrypt)


def _grouped(batches: Iterator[pa.RecordBatch], nbytes: int
             ) -> Generator[pa.Table, None, None]:
    """Batches grouped (no copy) into tables of about ``nbytes``: one app call each."""
    group: list[pa.RecordBatch] = []
    size = 0
    for batch in batches:
        group.append(batch)
        size += batch.nbytes
        if size >= nbytes:
            yield pa.Table.from_batches(group)
            group, size = [], 0
    if group:
        yield pa.Table.from_batches(group)


def _timed(it: Iterator[pa.RecordBatch], result: JobResult) -> Iterator[pa.RecordBatch]:
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            result.read_secs += time.perf_counter() - t0
            return
        result.read_secs += time.perf_counter() - t0
        yield batch


def run_file_job(config: PlatformConfig, profile: TenantProfile, job: FileJob,
                 warm: Warm | None = None) -> JobResult:
    """Ingest one file; never raises for bad input: the outcome says what happened.

    ``warm`` lends open sinks, ensured tables and app runners kept from earlier files (a
    warm worker's); without it they are opened for this file and closed after it.
    """
    result = JobResult(outcome="failed", work_started_at=time.time())
    try:
        if warm is not None:
            _run(config, profile, job, result, warm)
        else:
            with closing(Warm()) as own:
                _run(config, profile, job, result, own)
    except SimbdpError as e:
        set_outcome(result, e)
    if result.outcome != "processed":
        result.rows_loaded = result.rows_updated = 0  # rolled back: nothing is in the sink
    return result


def set_outcome(result: JobResult, e: SimbdpError) -> None:
    """The outcome of a file whose ingestion raised ``e``."""
    if isinstance(e, DuplicateIngestion):
        outcome = "duplicate"
    elif isinstance(e, Rejected):
        outcome = "rejected"
    elif isinstance(e, TransientError):  # sink or lock unavailable: it waits, then tries again
        outcome = "waiting"
    else:  # TerminalError and the rest
        outcome = "failed"
    result.outcome, result.reason, result.code = outcome, str(e), e.code


def _run(config: PlatformConfig, profile: TenantProfile, job: FileJob, result: JobResult,
         warm: Warm) -> None:
    tenant, name = profile.tenant_id, job.path.name
    route = profile.route_file(name)
    if route is None:
        raise Rejected(f"tenant {tenant!r}: {name!r}: no app or table takes this file", "no_route")
    app, table_names = route
    tables = {t: profile.table(t) for t in table_names}
    options = read_options(config, profile, name, app, table_names)
    names = sorted({s for t in tables.values() for s in t.sinks})
    try:
        with ExitStack() as stack:
            # the file's hash runs beside everything up to the commit (the app's start-up,
            # opening the sinks, reading, writing): the ledger is looked up in the write
            # transactions once the hash is known
            hashing = stack.enter_context(ThreadPoolExecutor(1)).submit(content_key, job.path)
            runner = None
            if app is not None:
                runner = warm.runner(config, tenant, app)
                result.sandbox = "bwrap" if runner.confined else "unconfined"
            opened = {n: warm.sink(config, n, profile) for n in names}
            txns: dict[str, SinkTransaction] = {}
            stack.callback(rollback_all, txns)
            for n, sink in opened.items():
                txns[n] = sink.begin(profile)
            _write_and_commit(config, profile, job, result, tables, txns, opened, options,
                              runner, app, hashing)
    except TransientError as e:  # retried later: the sinks committed now are skipped then
        for n in names:
            result.sinks.setdefault(n, f"waiting: {short_reason(str(e), 300)}")
        raise
    fault_point(config, "batch_after_commit")
    result.outcome = "processed"
    if result.rows_rejected:
        result.rejected_rows_file = str(rejected_rows_path(config, job))


def _skip_committed(profile: TenantProfile, job: FileJob, result: JobResult,
                    txns: dict[str, SinkTransaction]) -> None:
    """Roll back the transactions of sinks that hold the file already (an earlier attempt
    may have committed it to some); DuplicateIngestion if every sink holds it."""
    key, hit = result.content_key or "", None
    for sink_name, txn in list(txns.items()):
        entry = txn.ledger_entry(key)
        if entry is not None:
            hit = entry
            txn.rollback()
            del txns[sink_name]
            result.ledger_ingestion_id, result.ledger_rows = hit.ingestion_id, hit.rows
            result.sinks[sink_name] = f"already committed by ingestion {hit.ingestion_id}"
    if hit is not None and not txns:
        raise DuplicateIngestion(
            f"tenant {profile.tenant_id!r}: {job.path.name!r} has the same content as "
            f"{hit.source!r}, already ingested (ingestion {hit.ingestion_id}); nothing loaded")


def _write_and_commit(config: PlatformConfig, profile: TenantProfile, job: FileJob,
                      result: JobResult, tables: dict[str, TableSpec],
                      txns: dict[str, SinkTransaction], opened: dict[str, Sink],
                      options: ReadOptions, runner: AppRunner | None, app: AppSpec | None,
                      hashing: Future[str]) -> None:
    rejected_file = rejected_rows_path(config, job)
    # one table in one sink that takes a stream: the whole file in one statement
    streamed = len(txns) == len(tables) == 1 and all(
        hasattr(t, "write_stream") for t in txns.values()) and not any(
        t.quarantine for t in tables.values())  # its rows go to a second table
    refuse_nul = nul_refused(config, tables)
    try:
        _load(job.path, options, runner, app, tables, txns, result, rejected_file, streamed,
              refuse_nul, job.record_id)
    except KeyConflict:
        # the fast append met keys already in the table: read again and upsert
        (sink_name,) = txns
        txns[sink_name] = opened[sink_name].begin(profile)
        result.rows_in = result.rows_loaded = result.rows_rejected = 0
        result.rule_failures.clear()
        result.quality.clear()
        rejected_file.unlink(missing_ok=True)
        _load(job.path, options, runner, app, tables, txns, result, rejected_file, False,
              refuse_nul, job.record_id)
    try:
        check_pass_rates(tables, result, f"tenant {profile.tenant_id!r}: {job.path.name!r}")
    except Rejected:  # the caller rolls the sinks back: the file is kept in rejected/
        if result.rows_rejected:
            result.rejected_rows_file = str(rejected_file)
        raise
    result.content_key = hashing.result()
    try:
        _skip_committed(profile, job, result, txns)
    except DuplicateIngestion:  # what was read is rolled back: the record counts nothing
        result.rows_in = result.rows_rejected = 0
        result.rule_failures.clear()
        result.quality.clear()
        rejected_file.unlink(missing_ok=True)
        raise
    t0 = time.perf_counter()
    loaded = result.rows_loaded // max(1, len(tables))
    for sink_name, txn in list(txns.items()):
        txn.commit(LedgerEntry(tenant=profile.tenant_id, key=result.content_key or "",
                               source=job.path.name, ingestion_id=job.record_id, rows=loaded))
        result.sinks[sink_name] = "committed"
        # each sink of the table holds the same rows: they agree on what was updated
        result.rows_updated = max(result.rows_updated, txn.rows_updated)
        del txns[sink_name]
    result.write_secs += time.perf_counter() - t0


def _load(path: Path, options: ReadOptions, runner: AppRunner | None, app: AppSpec | None,
          tables: dict[str, TableSpec], txns: dict[str, SinkTransaction], result: JobResult,
          rejected_file: Path, streamed: bool, refuse_nul: frozenset[str] = frozenset(),
          record_id: str = "") -> None:
    """Read -> app -> conform in a thread while the sinks write the previous chunk."""
    started = time.perf_counter()
    outputs = file_outputs(path, options, runner, app, tables, result, rejected_file, refuse_nul,
                           record_id)
    with _Prefetch(outputs) as chunks:
        if streamed:
            (txn,), (table,) = txns.values(), tables.values()
            _stream_into(txn, table, chunks)
        else:
            for table, good in chunks:
                for sink_name in table.sinks:
                    if sink_name in txns:
                        txns[sink_name].write(table, good)
    # the sinks' own time: what they did not spend waiting for the next chunk
    result.write_secs += time.perf_counter() - started - chunks.waited


class _Prefetch(Generic[T]):
    """Run a generator in a thread, a few items ahead of its consumer."""

    _DONE = object()

    def __init__(self, source: Generator[T, None, None], depth: int = 2):
        self._source, self._queue = source, queue.Queue[object](maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="simbdp-read", daemon=True)
        self.waited = 0.0

    def __enter__(self) -> _Prefetch[T]:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a producer waiting for room
            with suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(e)
            return
        finally:
            self._source.close()
        self._put(self._DONE)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            with suppress(queue.Full):
                self._queue.put(item, timeout=0.05)
                return True
        return False

    def __iter__(self) -> Iterator[T]:
        while True:
            t0 = time.perf_counter()
            item = self._queue.get()
            self.waited += time.perf_counter() - t0
            if item is self._DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]


def check_pass_rates(tables: dict[str, TableSpec], result: JobResult, what: str) -> None:
    """Raise Rejected (``low_pass_rate``) if a table's rows of the file passed its checks
    less often than its ``min_pass_rate``; call it once the whole file is conformed."""
    for tname, stats in result.quality.items():
        breach = pass_rate_breach(tables[tname], stats, what)
        if breach is not None:
            raise Rejected(breach, "low_pass_rate")


def rejected_rows_path(config: PlatformConfig, job: FileJob) -> Path:
    """Where the rows of ``job``'s file that failed a rule or a cast are written."""
    return config.tenant_dir(job.tenant) / "rejected-rows" / f"{job.record_id}-{job.path.name}.csv"


def nul_refused(config: PlatformConfig, tables: dict[str, TableSpec]) -> frozenset[str]:
    """The tables whose rows may not hold a NUL byte (PostgreSQL text cannot): such rows
    are rejected, not the file."""
    return frozenset(t for t, spec in tables.items()
                     if any(config.sinks[s].kind == "postgres" for s in spec.sinks))


def file_outputs(path: Path, options: ReadOptions, runner: AppRunner | None,
                 app: AppSpec | None, tables: dict[str, TableSpec], result: JobResult,
                 rejected_file: Path, refuse_nul: frozenset[str] = frozenset(),
                 record_id: str = "", *, prefetch: bool = True
                 ) -> Generator[tuple[TableSpec, pa.Table], None, None]:
    """Read -> app -> conform, chunk by chunk: the rows that fit each target table. The next
    chunk is read (in a thread of its own) while the app works on this one; ``prefetch``
    False reads in the caller's thread (a small file: one chunk, no thread to start)."""
    names = tuple(tables)
    stats = ReadStats()
    seen = {t: SeenValues() for t in names}  # unique rules look over the whole file
    reading = _grouped(_timed(_counted(read_batches(path, options, stats), stats, result),
                              result), 4 * options.block_bytes)
    with _Prefetch(reading) if prefetch else closing(reading) as chunks:
        for i, chunk in enumerate(chunks):
            result.rows_in += chunk.num_rows
            t0 = time.perf_counter()
            if runner is not None and app is not None:
                ctx = AppContext(tenant=runner.tenant, app=app.name, source=path.name,
                                 tables=names, chunk=i)
                outputs = runner.call(chunk, ctx)
            else:
                outputs = {names[0]: chunk}
            result.app_secs += time.perf_counter() - t0
            for tname, data in outputs.items():
                yield from _conformed(tables[tname], data, path, result, rejected_file,
                                      tname in refuse_nul, seen[tname], record_id)


def _counted(batches: Iterator[pa.RecordBatch], stats: ReadStats, result: JobResult
             ) -> Iterator[pa.RecordBatch]:
    """Keep ``decompressed_bytes`` current, also when reading stops with an error."""
    try:
        yield from batches
    finally:
        result.decompressed_bytes = stats.bytes_read


def _conformed(table: TableSpec, data: pa.Table, path: Path, result: JobResult,
               rejected_file: Path, refuse_nul: bool = False, seen: SeenValues | None = None,
               record_id: str = "") -> Iterator[tuple[TableSpec, pa.Table]]:
    conformed = conform(data, table, path.name, refuse_nul=refuse_nul, seen=seen)
    stats = result.quality.setdefault(table.name, QualityStats())
    if table.quarantine and conformed.rows_rejected:  # rows numbered over the whole file
        yield table.quarantine_table(), quarantine_rows(
            conformed.rejected, table, path.name, record_id, stats.rows_checked)
    stats.add(conformed.stats)
    good = conformed.good
    if table.primary_key and good.num_rows:
        good = dedupe_last(good, table.primary_key)
    result.rows_loaded += good.num_rows  # a key repeated in the chunk is written once
    result.rows_rejected += conformed.rows_rejected
    for rule, n in conformed.rule_failures.items():
        result.rule_failures[rule] = result.rule_failures.get(rule, 0) + n
    if conformed.rows_rejected:
        rejected_file.parent.mkdir(parents=True, exist_ok=True)
        write_rejected(conformed.rejected, rejected_file)
    if good.num_rows:
        yield table, good


def _stream_into(txn: SinkTransaction, table: TableSpec,
                 outputs: Iterator[tuple[TableSpec, pa.Table]]) -> None:
    """Hand the sink one Arrow stream; an error raised while producing it is re-raised as
    itself, not as the sink's wrapping of it."""
    failure: list[BaseException] = []

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            for _, good in outputs:
                yield from good.to_batches()
        except BaseException as e:
            failure.append(e)
            raise

    reader = pa.RecordBatchReader.from_batches(table.arrow_schema(), batches())
    try:
        txn.write_stream(table, reader)  # type: ignore[attr-defined]
    except BaseException:
        if failure:
            raise failure[0] from None
        raise


def fault_point(config: PlatformConfig, name: str) -> None:
    """Crash here if ``<home>/.faults/<name>`` exists: lets tests kill a worker at the worst
    moment (after the sink commit, before the manager hears of it)."""
    if (config.home / ".faults" / name).exists():
        os._exit(137)


def rollback_all(txns: dict[str, SinkTransaction]) -> None:
    for txn in txns.values():
        with suppress(SimbdpError):
            txn.rollback()
