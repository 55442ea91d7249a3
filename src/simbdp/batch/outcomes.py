"""What becomes of a file after an attempt: its ingestion record, its outcome folder and reason
file, what it counts against the daily quota, or another try.

A worker that died gets the file again after a back-off, up to ``job_attempts`` times. A file
whose sink is unavailable waits, its record ``waiting`` with the reason, and tries again with
capped, jittered back-off for up to ``sink_outage_max_secs``; only then does it fail.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from simbdp.batch.protocol import FileJob, JobResult
from simbdp.batch.staging import move_to_outcome
from simbdp.errors import Rejected
from simbdp.profiles.platform import PlatformConfig
from simbdp.quality.stats import quality_json
from simbdp.state import StateStore, short_reason, today

__all__ = ["Outcomes", "Retry"]

_RETRY_BASE_SECS = 0.5
_FOLDERS = {"processed": "processed", "duplicate": "rejected", "rejected": "rejected",
            "failed": "failed"}
_STATS = ("rows_in", "rows_loaded", "rows_updated", "rows_rejected", "read_secs", "app_secs",
          "write_secs")

#: another try of a file: when it is due (``time.monotonic()``) and its job
Retry = tuple[float, FileJob]


class Outcomes:
    """Records what happened to each file of the platform's tenants."""

    def __init__(self, config: PlatformConfig, store: StateStore, log: Any):
        self.config, self.store, self.log = config, store, log

    def reject(self, tenant: str, path: Path, err: Rejected, nbytes: int | None = None) -> str:
        """Record a file refused before any work and move it to ``rejected/``; return the
        record id. ``nbytes``: its size, if known (else read from the entry)."""
        if nbytes is None:
            try:
                nbytes = path.lstat().st_size
            except OSError:
                nbytes = 0
        rid = self.store.add_record(tenant, "batch", path.name, "rejected", reason=str(err),
                                    bytes=nbytes)
        move_to_outcome(self.config, tenant, path, "rejected",
                        {"reason": str(err), "code": err.code, "record": rid})
        self.log.warning("rejected", tenant=tenant, file=path.name, code=err.code,
                         reason=short_reason(str(err)), record=rid)
        return rid

    def finish(self, job: FileJob, result: JobResult) -> Retry | None:
        """Record an attempt's result. Returns the next try when the file goes again (its
        worker died, or its sink is away); else None: the file is in its outcome folder and
        its record finished."""
        tenant, path = job.tenant, job.path
        outcome = result.outcome
        if result.reason and not result.reason.startswith(f"tenant {tenant!r}"):
            result.reason = f"tenant {tenant!r}: {result.reason}"  # records name the tenant
        if outcome == "duplicate" and self._is_own_commit(job, result):
            outcome = "processed"
            result.reason = (f"committed by attempt {result.ledger_ingestion_id} before an "
                             "interruption; finished now")
            # the committed rows are the ledger's; what this attempt read loaded nothing
            result.rows_loaded = result.ledger_rows or 0
        stats = {k: getattr(result, k) for k in _STATS}
        if outcome == "waiting":
            wait = self._wait_out(job, result)
            if wait is not None:
                return wait
            outcome = "failed"
        if outcome == "retry":
            if job.attempt < self.config.job_attempts:
                return self._retry(job, result, stats)
            outcome = "failed"
            result.reason = f"gave up after {job.attempt} attempts: {result.reason}"
        folder = _FOLDERS[outcome]
        # the daily byte quota counts what was really read, not the compressed size: a file
        # rejected at a limit (a gzip bomb) counts what was read up to it
        day, decompressed = job.quota_day or today(), result.decompressed_bytes or None
        if outcome in ("duplicate", "rejected"):
            self.store.release_files(tenant, day, 1, job.nbytes)
            if outcome == "rejected" and decompressed:
                self.store.add_bytes(tenant, day, decompressed)
        elif decompressed and decompressed > job.nbytes:
            self.store.add_bytes(tenant, day, decompressed - job.nbytes)
        details = {"result": outcome, "reason": result.reason, "code": result.code,
                   "record": job.record_id,
                   "content_key": result.content_key, **stats,
                   "rejected_rows_file": result.rejected_rows_file,
                   "quality": result.rule_failures}
        move_to_outcome(self.config, tenant, path, folder, details)
        self.store.finish_record(job.record_id, outcome, reason=result.reason,
                                 content_key=result.content_key, sandbox=result.sandbox,
                                 decompressed_bytes=decompressed,
                                 work_started_at=result.work_started_at,
                                 quality=quality_json(result.quality),
                                 sinks=_sinks_json(result), **stats)
        log = self.log.info if outcome == "processed" else self.log.warning
        log(outcome, tenant=tenant, file=path.name, record=job.record_id,
            reason=short_reason(result.reason), **stats)
        return None

    def interrupt(self, job: FileJob, reason: str) -> None:
        """Record an attempt the manager stopped and release its quota; the file stays in
        ``inflight/`` for the next start."""
        self.store.finish_record(job.record_id, "interrupted", reason=reason)
        self.store.release_files(job.tenant, job.quota_day, 1, job.nbytes)
        self.log.warning("interrupted", tenant=job.tenant, file=job.path.name,
                         record=job.record_id, reason=reason)

    def _retry(self, job: FileJob, result: JobResult, stats: dict[str, Any]) -> Retry:
        """The attempt was interrupted (its worker died): a new record, after a back-off."""
        self.store.finish_record(job.record_id, "interrupted", reason=result.reason, **stats)
        rid = self.store.start_record(job.tenant, "batch", job.path.name, bytes=job.nbytes,
                                      attempt=job.attempt + 1, quota_day=job.quota_day)
        delay = _RETRY_BASE_SECS * 2 ** (job.attempt - 1)
        due = time.monotonic() + delay
        self.log.warning("retry", tenant=job.tenant, file=job.path.name,
                         reason=short_reason(result.reason), attempt=job.attempt,
                         next_in_secs=delay)
        return due, replace(job, record_id=rid, attempt=job.attempt + 1)

    def _wait_out(self, job: FileJob, result: JobResult) -> Retry | None:
        """A sink was unavailable: the file goes again after a capped, jittered back-off, its
        record ``waiting``; None once it has waited ``sink_outage_max_secs``."""
        now = time.time()
        since = job.waiting_since if job.waiting_since is not None else now
        waited = now - since
        if waited >= self.config.sink_outage_max_secs:
            result.reason = (f"tenant {job.tenant!r}: {job.path.name!r}: the sink stayed "
                             f"unavailable for {waited:.0f} s (sink_outage_max_secs "
                             f"{self.config.sink_outage_max_secs:g}): {result.reason}")
            return None
        cap = self.config.sink_retry_max_secs
        delay = min(cap, _RETRY_BASE_SECS * 2 ** min(job.waits, 30))
        delay *= random.uniform(0.75, 1.0)  # jitter: files do not all come back at once
        reason = (f"waiting for the sink since {waited:.0f} s, next try in {delay:.1f} s: "
                  f"{result.reason}")
        self.store.mark_record(job.record_id, "waiting", reason, sinks=_sinks_json(result))
        due = time.monotonic() + delay
        log = self.log.warning if job.waits == 0 else self.log.info
        log("waiting", tenant=job.tenant, file=job.path.name, record=job.record_id,
            reason=short_reason(result.reason), waited_secs=round(waited, 1),
            next_in_secs=round(delay, 2))
        return due, replace(job, waits=job.waits + 1, waiting_since=since)

    def _is_own_commit(self, job: FileJob, result: JobResult) -> bool:
        """A ledger hit from this very file: an earlier attempt interrupted after its commit,
        or this attempt's own commit whose answer was lost (the sink went away meanwhile)."""
        if result.ledger_ingestion_id is None:
            return False
        if result.ledger_ingestion_id == job.record_id:
            return True
        prior = self.store.record(result.ledger_ingestion_id)
        return (prior is not None and prior["tenant"] == job.tenant
                and prior["source"] == job.path.name and prior["outcome"] == "interrupted")


def _sinks_json(result: JobResult) -> str | None:
    """The record's ``sinks``: what the attempt left in each sink (JSON), if it reached one."""
    return json.dumps(result.sinks, sort_keys=True) if result.sinks else None
