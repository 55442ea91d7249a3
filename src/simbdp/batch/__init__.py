"""Batch ingestion: staging folders, the watcher, the manager and its workers."""

from simbdp.batch.manager import BatchIngestManager, Submission

__all__ = ["BatchIngestManager", "Submission"]
