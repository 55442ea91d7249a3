"""Small files of one tenant in one transaction: the seeds' "few large writes".

A flood of small files costs, per file, a ledger lookup, a transaction, an insert and a commit
(a WAL sync). :func:`run_file_group` takes several small files of one tenant at once: one
ledger lookup for all their hashes, each file read whole (they are small) through its app and
rules, each table's rows written in one statement (a keyed table: file by file, in order, so
the last row of a key wins as when the files come one by one), and one commit that carries
every file's own ledger row. Each file keeps its own record, outcome and reason.

A file rejected or failed while being read touched nothing of the transaction, so the others
go on. Anything that fails the group as a whole (a write or the commit) leaves nothing in the
sink; the files then get ``retry`` and run again one by one, where each finds its own outcome.
A worker that dies mid-group loses the group's transaction only: every file is retried.
"""

from __future__ import annotations

import time

import pyarrow as pa

from simbdp.batch.job import (
    FileJob,
    JobResult,
    check_pass_rates,
    content_key,
    fault_point,
    file_outputs,
    nul_refused,
    read_options,
    rejected_rows_path,
    rollback_all,
    set_outcome,
)
from simbdp.batch.warm import Warm
from simbdp.coredms.base import LedgerEntry, SinkTransaction
from simbdp.errors import Rejected, SimbdpError, TransientError
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.profiles.tables import TableSpec

__all__ = ["run_file_group"]

def run_file_group(config: PlatformConfig, profile: TenantProfile, jobs: list[FileJob],
                   warm: Warm) -> list[JobResult]:
    """Ingest small files of one tenant in one transaction; one result per job, in order.
    Never raises for bad input."""
    results = [JobResult(outcome="failed", work_started_at=time.time()) for _ in jobs]
    try:
        _run_group(config, profile, jobs, results, warm)
    except SimbdpError as e:
        for job, result in zip(jobs, results, strict=True):
            if result.outcome != "failed" or result.reason is not None:
                continue  # this file had its own outcome before the group failed
            if isinstance(e, TransientError):
                set_outcome(result, e)
            else:
                result.outcome, result.code = "retry", "group_failed"
                result.reason = (f"tenant {job.tenant!r}: {job.path.name!r}: the files "
                                 f"ingested with it in one transaction failed ({e}); it runs "
                                 "again on its own")
    for result in results:
        if result.outcome != "processed":
            result.rows_loaded = result.rows_updated = 0
    return results


def _run_group(config: PlatformConfig, profile: TenantProfile, jobs: list[FileJob],
               results: list[JobResult], warm: Warm) -> None:
    tenant = profile.tenant_id
    (sink_name,) = {s for t in profile.tables for s in t.sinks}
    sink = warm.sink(config, sink_name, profile)
    keys = [content_key(j.path) for j in jobs]
    hits = sink.ledger_lookup_many(profile, keys)  # type: ignore[attr-defined]
    first: dict[str, FileJob] = {}  # content key -> the file of this group read with it
    twins: list[tuple[FileJob, JobResult, FileJob]] = []  # duplicates of a file of this group
    todo: list[tuple[FileJob, JobResult, list[tuple[TableSpec, pa.Table]]]] = []
    for job, result, key in zip(jobs, results, keys, strict=True):
        result.content_key = key
        hit = hits.get(key)
        if hit is not None:
            result.ledger_ingestion_id, result.ledger_rows = hit.ingestion_id, hit.rows
            _duplicate(result, job, hit.source, hit.ingestion_id)
            continue
        if key in first:  # a duplicate once the group commits (else it runs again alone)
            twins.append((job, result, first[key]))
            continue
        try:
            todo.append((job, result, _read_whole(config, profile, job, result, warm)))
            first[key] = job
        except TransientError:
            raise
        except SimbdpError as e:  # this file only: nothing of it reached the transaction
            set_outcome(result, e)
            rejected_rows_path(config, job).unlink(missing_ok=True)
            warm.close_runners()  # an app that failed may be gone: the next file starts one
    if not todo:
        return
    txn = sink.begin(profile)
    try:
        t0 = time.perf_counter()
        _write(txn, todo)
        txn.commit_many([LedgerEntry(tenant=tenant, key=r.content_key or "", source=j.path.name,  # type: ignore[attr-defined]
                                     ingestion_id=j.record_id, rows=r.rows_loaded)
                         for j, r, _ in todo])
    except BaseException:
        rollback_all({sink_name: txn})
        raise
    spent = (time.perf_counter() - t0) / len(todo)
    fault_point(config, "batch_after_commit")
    for job, result, _ in todo:
        result.write_secs += spent
        result.outcome = "processed"
        result.sinks[sink_name] = "committed"
        if result.rows_rejected:
            result.rejected_rows_file = str(rejected_rows_path(config, job))
    for job, result, original in twins:
        _duplicate(result, job, original.path.name, original.record_id)


def _duplicate(result: JobResult, job: FileJob, source: str, ingestion_id: str) -> None:
    result.outcome, result.code = "duplicate", "duplicate"
    result.reason = (f"tenant {job.tenant!r}: {job.path.name!r} has the same content as "
                     f"{source!r}, already ingested (ingestion {ingestion_id}); nothing loaded")


def _read_whole(config: PlatformConfig, profile: TenantProfile, job: FileJob,
                result: JobResult, warm: Warm) -> list[tuple[TableSpec, pa.Table]]:
    """Read a small file through its app and rules: the rows for each table."""
    name = job.path.name
    route = profile.route_file(name)
    if route is None:
        raise Rejected(f"tenant {profile.tenant_id!r}: {name!r}: no app or table takes this "
                       "file", "no_route")
    app, table_names = route
    tables = {t: profile.table(t) for t in table_names}
    runner = None
    if app is not None:
        runner = warm.runner(config, profile.tenant_id, app)
        result.sandbox = "bwrap" if runner.confined else "unconfined"
    options = read_options(config, profile, name, app, table_names)
    outputs = list(file_outputs(job.path, options, runner, app, tables, result,
                                rejected_rows_path(config, job), nul_refused(config, tables),
                                job.record_id, prefetch=False))
    check_pass_rates(tables, result, f"tenant {profile.tenant_id!r}: {name!r}")
    return outputs


def _write(txn: SinkTransaction, todo: list[tuple[FileJob, JobResult,
                                                   list[tuple[TableSpec, pa.Table]]]]) -> None:
    """Each unkeyed table's rows of every file in one write; a keyed table's file by file,
    so that each file's ``rows_updated`` is its own and the last file's row of a key wins."""
    unkeyed: dict[str, tuple[TableSpec, list[pa.Table]]] = {}
    for _, result, outputs in todo:
        for table, data in outputs:
            if table.primary_key:
                before = txn.rows_updated
                txn.write(table, data)
                result.rows_updated += txn.rows_updated - before
            else:
                unkeyed.setdefault(table.name, (table, []))[1].append(data)
    for table, parts in unkeyed.values():
        txn.write(table, pa.concat_tables(parts))
