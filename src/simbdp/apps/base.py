"""The tenant app contract (clientbatchingestapp and clientstreamingestapp).

A tenant app is a function named ``module:function`` in the profile, found in the tenant's own
app folder (``<home>/apps/<tenant>/``)::

    def wrangle(data: pyarrow.Table, ctx: simbdp.apps.AppContext)
        -> pyarrow.Table | pyarrow.RecordBatch | dict[str, pyarrow.Table | pyarrow.RecordBatch]

It is called once per chunk of a file, or once per micro-batch of messages, and returns rows
for its target table (or a dict ``{table: rows}`` when the app writes several tables). The
platform casts the result to the declared table schema; extra columns are an error, missing
nullable columns are filled with nulls.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AppContext"]


@dataclass(frozen=True)
class AppContext:
    """What an app knows about the data it is given."""

    tenant: str
    app: str
    source: str  # the file name, or "stream:<queue>"
    tables: tuple[str, ...]  # target tables of the app
    chunk: int = 0  # 0-based index of the chunk within the file or of the micro-batch
