"""The heartbeat file of a stream instance: touched while its loop turns (also while a batch
is written or the sink retried); the manager restarts an instance whose file goes stale."""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["Heartbeat", "heartbeat_path"]


def heartbeat_path(home: Path, instance: str) -> Path:
    """The file an instance touches while its loop runs; the manager watches its mtime."""
    return home / "run" / "stream" / f"{instance}.alive"


class Heartbeat:
    """Touches ``path`` at most once a second, however often :meth:`beat` is called."""

    def __init__(self, path: Path):
        self.path = path
        self._at = 0.0

    def beat(self) -> None:
        now = time.monotonic()
        if now - self._at >= 1.0:
            self._at = now
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
