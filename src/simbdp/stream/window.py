"""One report window of a stream instance: what it received, loaded and refused, the
latency publish -> commit of each committed message, and what each sink did."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbdp.quality import QualityStats, quality_json

__all__ = ["MAX_ERROR_CHARS", "SinkWindow", "Window"]

MAX_ERROR_CHARS = 300  # of a sink's last error in a report


@dataclass
class SinkWindow:
    """One sink's part of a window: its commits, and the last failure if the sink was away.

    ``completed`` counts messages written into this sink only, because another sink had
    them already (a crash between two sinks' commits)."""

    commits: int = 0
    messages: int = 0
    rows: int = 0
    completed: int = 0
    failures: int = 0
    last_error: str | None = None
    #: the last attempt failed: the micro-batch waits (retried, or nacked and redelivered)
    waiting: bool = False
    last_commit_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        state = f"waiting: {self.last_error}" if self.waiting else "committed" \
            if self.commits else "idle"
        return {"state": state, "commits": self.commits, "messages": self.messages,
                "rows": self.rows, "completed": self.completed, "failures": self.failures,
                "last_error": self.last_error, "last_commit_at": self.last_commit_at}


@dataclass
class Window:
    """Counts since ``start``; latencies are kept per committed micro-batch as arrays.
    ``id`` becomes the report's id (quarantined rows name it as their ingestion)."""

    start: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    messages: int = 0
    bytes: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    #: the quality checks' counts per table over the window
    quality: dict[str, QualityStats] = field(default_factory=dict)
    #: what each sink did in the window (see :class:`SinkWindow`)
    sinks: dict[str, SinkWindow] = field(default_factory=dict)
    _latencies_ms: list[np.ndarray] = field(default_factory=list)

    def committed(self, published_at: list[float], rows: int) -> None:
        """A micro-batch committed now: its messages' publish times and the rows written."""
        self.rows_loaded += rows
        if published_at:
            self._latencies_ms.append(
                (time.time() - np.asarray(published_at, dtype=np.float64)) * 1000.0)

    def sink(self, name: str) -> SinkWindow:
        return self.sinks.setdefault(name, SinkWindow())

    def sink_committed(self, name: str, messages: int, rows: int, *, completing: bool) -> None:
        s = self.sink(name)
        s.commits += 1
        s.messages += messages
        s.rows += rows
        s.completed += messages if completing else 0
        s.waiting, s.last_commit_at = False, time.time()

    def sink_failed(self, name: str, reason: str) -> None:
        s = self.sink(name)
        s.failures += 1
        # reports are bounded: the log line of the attempt keeps the reason whole
        s.last_error = reason if len(reason) <= MAX_ERROR_CHARS \
            else reason[:MAX_ERROR_CHARS - 3] + "..."
        s.waiting = True

    def figures(self) -> dict[str, Any]:
        """The window's part of an instance report (mean and p99 latency, None when nothing
        was committed)."""
        lat = np.concatenate(self._latencies_ms) if self._latencies_ms else None
        out: dict[str, Any] = {
            "id": self.id, "window_start": self.start, "window_end": time.time(),
            "messages": self.messages, "bytes": self.bytes, "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected, "latency_mean_ms": None,
            "latency_p99_ms": None, "quality": quality_json(self.quality),
            "sinks": {n: s.as_dict() for n, s in sorted(self.sinks.items())} or None}
        if lat is not None and lat.size:
            lat.sort()
            out["latency_mean_ms"] = float(lat.mean())
            # the same rank as before: the value at index int(n * 0.99)
            out["latency_p99_ms"] = float(lat[min(lat.size - 1, int(lat.size * 0.99))])
        return out
