"""Structured logs: one JSON object per line, for every decision the platform takes.

structlog (and the rich and asyncio modules it brings) is imported by the first logger or
configuration, not with this module: a batch worker that logs nothing never loads it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["configure_logging", "get_logger"]


def configure_logging(log_file: Path | None = None, *, console: bool = False,
                      level: int = logging.INFO) -> None:
    """Send JSON-lines logs to ``log_file`` (appended) and, if ``console``, to stderr."""
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    if console:
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger("simbdp")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(h)
    root.setLevel(level)
    root.propagate = False
    # watchdog warns when its emitter thread is stopped with events queued: not ours to show
    logging.getLogger("watchdog").setLevel(logging.ERROR)
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str = "simbdp", **bound: Any) -> Any:
    import structlog

    return structlog.get_logger(name).bind(**bound)
