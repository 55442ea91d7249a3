"""Batch ingestion: staging folders, the watcher, the manager and its workers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simbdp.batch.manager import BatchIngestManager, Submission

__all__ = ["BatchIngestManager", "Submission"]


def __getattr__(name: str) -> Any:
    # lazily: a worker (``python -m simbdp.batch.worker``) imports the job path, not the
    # manager, its watcher and its state store
    if name in __all__:
        from simbdp.batch import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
