"""One report window of a stream instance: what it received, loaded and refused, and the
latency publish -> commit of each committed message."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simbdp.quality import QualityStats, quality_json

__all__ = ["Window"]


@dataclass
class Window:
    """Counts since ``start``; latencies are kept per committed micro-batch as arrays."""

    start: float = field(default_factory=time.time)
    messages: int = 0
    bytes: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    #: the quality checks' counts per table over the window
    quality: dict[str, QualityStats] = field(default_factory=dict)
    _latencies_ms: list[np.ndarray] = field(default_factory=list)

    def committed(self, published_at: list[float], rows: int) -> None:
        """A micro-batch committed now: its messages' publish times and the rows written."""
        self.rows_loaded += rows
        if published_at:
            self._latencies_ms.append(
                (time.time() - np.asarray(published_at, dtype=np.float64)) * 1000.0)

    def figures(self) -> dict[str, Any]:
        """The window's part of an instance report (mean and p99 latency, None when nothing
        was committed)."""
        lat = np.concatenate(self._latencies_ms) if self._latencies_ms else None
        out: dict[str, Any] = {
            "window_start": self.start, "window_end": time.time(), "messages": self.messages,
            "bytes": self.bytes, "rows_loaded": self.rows_loaded,
            "rows_rejected": self.rows_rejected, "latency_mean_ms": None,
            "latency_p99_ms": None, "quality": quality_json(self.quality)}
        if lat is not None and lat.size:
            lat.sort()
            out["latency_mean_ms"] = float(lat.mean())
            # the same rank as before: the value at index int(n * 0.99)
            out["latency_p99_ms"] = float(lat[min(lat.size - 1, int(lat.size * 0.99))])
        return out
