"""An exclusive ``flock`` on a file, waited for with a deadline (local folders only)."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from simbdp.errors import SinkUnavailable

__all__ = ["LOCK_TIMEOUT_SECS", "FileLock"]

LOCK_TIMEOUT_SECS = 600.0


class FileLock:
    """Held from construction until :meth:`release`; ``what`` names it in the error raised
    (SinkUnavailable, transient) when it stays busy for ``LOCK_TIMEOUT_SECS``."""

    def __init__(self, path: Path, what: str):
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + LOCK_TIMEOUT_SECS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(self.fd)
                    raise SinkUnavailable(f"{what} busy for {LOCK_TIMEOUT_SECS:.0f} s") from None
                time.sleep(0.02)

    def release(self) -> None:
        if self.fd >= 0:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1
