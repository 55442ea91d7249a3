"""Tenant service profiles: limits, apps, encryption, and the profile itself."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Annotated, Literal

from pydantic import ByteSize, Field, StringConstraints, field_validator, model_validator

from simbdp.profiles.base import FileType, Identifier, Model
from simbdp.profiles.tables import QUARANTINE_SUFFIX, TableSpec
from simbdp.profiles.types import normalize_type

__all__ = ["ROUTED_APP", "AppSpec", "BatchLimits", "CsvOptions", "EncryptionSettings",
           "LakeSettings", "StreamLimits", "TenantProfile"]


class CsvOptions(Model):
    delimiter: str = Field(",", min_length=1, max_length=1)
    """Field separator, one character."""
    quote_char: str = Field('"', min_length=1, max_length=1)
    """Quote character, one character."""
    header: bool = True
    """Whether the first line names the columns."""
    null_values: list[str] = [""]
    """Texts read as null."""
    max_field_bytes: ByteSize = Field(ByteSize(64 * 1024**2), ge=1024)
    """The longest text value read (CSV, JSON lines); a longer one fails the file, naming it."""


class BatchLimits(Model):
    file_types: list[FileType] = ["csv"]
    """File types accepted: csv, json (an array), jsonl, parquet; csv, json and jsonl also gzip
    (``.gz``) or zstd (``.zst``) compressed."""
    max_file_bytes: ByteSize = ByteSize(100 * 1024**2)
    """Largest file, counted decompressed; a bigger one is rejected (``file_too_big``)."""
    max_files_per_ingestion: int = Field(100, ge=1)
    """Most files taken in one ingestion request (CLI ``ingest``, API)."""
    max_files_per_day: int = Field(1000, ge=0)
    """Files per day; a file beyond it is rejected (``quota_exceeded``)."""
    max_bytes_per_day: ByteSize = ByteSize(10 * 1024**3)
    """Bytes per day (decompressed bytes count); beyond it a file is rejected."""
    max_file_secs: float = Field(3600.0, gt=0)
    """A worker still on one file after this is killed and the file failed."""
    max_rows_per_file: int = Field(100_000_000, ge=1)
    """Most rows in one file once decompressed (``too_many_rows``)."""
    max_columns: int = Field(2_000, ge=1)
    """Most columns in one file, checked on its header (``too_many_columns``)."""


class StreamLimits(Model):
    max_messages_per_day: int = Field(10_000_000, ge=0)
    """Messages per day to the tenant's queue."""
    max_bytes_per_day: ByteSize = ByteSize(10 * 1024**3)
    """Message bytes per day."""
    max_message_bytes: ByteSize = ByteSize(1024**2)
    """Largest message; a bigger one is refused."""
    route_by: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$")
    """Route messages to stream apps by their type: the name of a message header, else of
    a top-level field of the JSON message, holding it; each stream app then takes the types
    in its ``message_types``, and a message of another type (or of none) is dead-lettered.
    Unset: the stream apps are competing consumers of the queue (a message goes to any one)."""


class LakeSettings(Model):
    """Stream apps writing to a delta sink: micro-batches are buffered (unacknowledged) and
    committed together, so the lake gets few large files (see docs/design.md)."""

    target_file_mb: float = Field(128, gt=0)
    """Commit once the buffered rows reach this many MB (Arrow, before Parquet compression)."""
    max_wait_secs: float = Field(60.0, gt=0, le=1200)
    """Commit once the oldest buffered micro-batch is this old (capped at half the broker's
    ``lease_secs``, so nothing is redelivered meanwhile; RabbitMQ closes a channel holding a
    delivery unacked for its ``consumer_timeout``, 30 min by default)."""
    max_messages: int = Field(100_000, ge=1)
    """Commit once this many messages are buffered (capped by the broker's unacked limit:
    RabbitMQ prefetch, NATS ``max_ack_pending``)."""


class EncryptionSettings(Model):
    """Encrypted input: the tenant's keyset (see docs/design.md, "Encrypted input")."""

    keyset: Path
    """The tenant's keyset file (``simbdp keyset new``), relative to the platform home or
    absolute; outside the tenants' folders, owned by the platform's user, mode 0600. Files named
    ``*.enc`` and messages with the ``simbdp-encryption`` header are decrypted with it."""
    required: bool = False
    """Refuse input in plain text: a file not named ``*.enc`` is rejected and a message without
    the header is dead-lettered."""


#: the name a routed tenant's stream instances run under (stream/route.py): no app's name there
ROUTED_APP = "routed"


class AppSpec(Model):
    """A tenant app: ``entrypoint`` is ``module:function`` in the tenant's app folder.

    Batch apps take files matching ``file_pattern``; stream apps consume the tenant's queue.
    """

    name: Identifier
    """App name, unique in the profile."""
    kind: Literal["batch", "stream"] = "batch"
    """``batch`` (files) or ``stream`` (the tenant's queue)."""
    entrypoint: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """``module:function`` in the tenant's app folder (see docs/apps.md)."""
    tables: list[Identifier] = Field(min_length=1)
    """Tables the app writes; the first is the target of a single-table result."""
    file_pattern: str = "*"
    """Batch apps: shell pattern of the file names the app takes."""
    timeout_secs: float = Field(300.0, gt=0)
    """Longest one call of the app may take; then its process is killed."""
    memory_mb: int = Field(1024, ge=64)
    """Memory of the app's process (and its children); an app using duckdb needs 1024."""
    input_columns: dict[str, str] = {}
    """Typed input columns for CSV files (others are read as inferred)."""
    batch_max_rows: int = Field(10_000, ge=1)
    """Stream apps: most messages in one micro-batch."""
    batch_max_bytes: ByteSize = ByteSize(8 * 1024**2)
    """Stream apps: most bytes in one micro-batch."""
    batch_max_wait_ms: int = Field(500, ge=1)
    """Stream apps: longest wait to fill a micro-batch."""
    min_instances: int = Field(1, ge=0)
    """Stream apps: fewest running instances."""
    max_instances: int = Field(4, ge=1)
    """Stream apps: most running instances."""
    target_backlog: int = Field(5_000, ge=1)
    """Stream apps: messages waiting above which the monitor adds an instance."""
    target_latency_ms: int = Field(1_000, ge=1)
    """Stream apps: latency above which the monitor adds an instance."""
    message_types: list[Annotated[str, StringConstraints(min_length=1)]] = []
    """Stream apps of a tenant with ``stream.route_by``: the message types the app takes
    (each type one app's)."""

    @field_validator("input_columns")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: normalize_type(t) for k, t in v.items()}

    @model_validator(mode="after")
    def _check(self) -> AppSpec:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances is above max_instances")
        if self.message_types and self.kind != "stream":
            raise ValueError(f"app {self.name!r}: message_types is for stream apps; a batch "
                             "app takes files by file_pattern")
        return self


class TenantProfile(Model):
    """The service profile of one tenant: constraints, tables and apps."""

    tenant_id: Identifier
    """The tenant's id; the profile file must be named ``<tenant_id>.yaml``."""
    namespace: Identifier | None = None
    """Schema of the tenant's tables in coredms; defaults to tenant_id."""
    enabled: bool = True
    """A disabled tenant's files wait in staging and its apps do not run."""
    tables: list[TableSpec] = Field(min_length=1)
    """The tenant's tables (at least one)."""
    batch: BatchLimits = BatchLimits()
    """Limits of batch ingestion (files)."""
    stream: StreamLimits = StreamLimits()
    """Limits of stream ingestion (messages)."""
    lake: LakeSettings = LakeSettings()
    """Stream apps into a delta sink: how micro-batches are buffered before a commit."""
    csv: CsvOptions = CsvOptions()
    """How CSV files are read."""
    apps: list[AppSpec] = []
    """The tenant's apps (optional: without one, files load as they are)."""
    encryption: EncryptionSettings | None = None
    """Encrypted files and messages: the tenant's keyset (unset: none accepted)."""

    @model_validator(mode="before")
    @classmethod
    def _rules_name_columns(cls, data: object) -> object:
        """A quality rule naming an unknown column, said with the tenant, table, rule and
        column (the table's own check does not know the tenant)."""
        if not isinstance(data, dict) or not isinstance(data.get("tables"), list):
            return data
        problems = []
        for t in data["tables"]:
            if not isinstance(t, dict) or not isinstance(t.get("columns"), list) \
                    or not isinstance(t.get("quality"), list):
                continue
            cols = [c.get("name") for c in t["columns"] if isinstance(c, dict)]
            problems += [
                f"tenant {data.get('tenant_id')!r}: table {t.get('name')!r}: quality rule "
                f"{r.get('name')!r} names unknown column {r.get('column')!r} (columns: "
                f"{', '.join(map(str, cols))})"
                for r in t["quality"] if isinstance(r, dict) and r.get("column") not in cols]
        if problems:
            raise ValueError("; ".join(problems))
        return data

    @model_validator(mode="after")
    def _check(self) -> TenantProfile:
        if self.namespace is None:
            object.__setattr__(self, "namespace", self.tenant_id)
        tables = [t.name for t in self.sink_tables()]
        if len(set(tables)) != len(tables):
            raise ValueError("table names must be unique (a quarantine table is named "
                             f"<table>{QUARANTINE_SUFFIX})")
        apps = [a.name for a in self.apps]
        if len(set(apps)) != len(apps):
            raise ValueError("app names must be unique")
        for a in self.apps:
            unknown = [t for t in a.tables if t not in tables]
            if unknown:
                raise ValueError(f"app {a.name!r} writes to unknown tables {unknown}")
        self._check_routes()
        return self

    def _check_routes(self) -> None:
        """``stream.route_by`` and the stream apps' ``message_types`` go together, and each
        type is one app's."""
        stream, route = self.stream_apps(), self.stream.route_by
        if route is None:
            typed = [a.name for a in stream if a.message_types]
            if typed:
                raise ValueError(f"tenant {self.tenant_id!r}: stream apps {typed} list "
                                 "message_types, but stream.route_by (the header or field "
                                 "holding the type) is not set")
            return
        if any(a.name == ROUTED_APP for a in stream):
            raise ValueError(f"tenant {self.tenant_id!r}: with stream.route_by set, no stream "
                             f"app may be named {ROUTED_APP!r} (its instances run under that "
                             "name)")
        untyped = [a.name for a in stream if not a.message_types]
        if untyped:
            raise ValueError(f"tenant {self.tenant_id!r}: stream.route_by is {route!r}, so "
                             f"every stream app lists its message_types; {untyped} do not")
        owner: dict[str, str] = {}
        for a in stream:
            for t in a.message_types:
                if owner.setdefault(t, a.name) != a.name:
                    raise ValueError(f"tenant {self.tenant_id!r}: message type {t!r} is "
                                     f"taken by apps {owner[t]!r} and {a.name!r}; each type "
                                     "goes to one app")

    @property
    def schema_name(self) -> str:
        return self.namespace or self.tenant_id

    def table(self, name: str) -> TableSpec:
        """A table of the profile, or the quarantine table of one; KeyError if none."""
        for t in self.tables:
            if t.name == name:
                return t
        for t in self.tables:
            if t.quarantine and name == t.name + QUARANTINE_SUFFIX:
                return t.quarantine_table()
        raise KeyError(f"tenant {self.tenant_id!r} has no table {name!r}")

    def sink_tables(self) -> list[TableSpec]:
        """The tables the sinks hold: the profile's and their quarantine tables."""
        return [*self.tables, *(t.quarantine_table() for t in self.tables if t.quarantine)]

    def app(self, name: str) -> AppSpec:
        for a in self.apps:
            if a.name == name:
                return a
        raise KeyError(f"tenant {self.tenant_id!r} has no app {name!r}")

    def route_file(self, filename: str) -> tuple[AppSpec | None, list[str]] | None:
        """Pick the batch app and target tables for a file name, or None if nothing takes it.

        The first batch app whose ``file_pattern`` matches wins; without one, a table whose
        name prefixes the file name, or the only table, takes the file as it is.
        """
        for a in self.apps:
            if a.kind == "batch" and fnmatch.fnmatch(filename, a.file_pattern):
                return a, list(a.tables)
        for t in self.tables:
            if filename.startswith(t.name):
                return None, [t.name]
        if len(self.tables) == 1:
            return None, [self.tables[0].name]
        return None

    def stream_apps(self) -> list[AppSpec]:
        return [a for a in self.apps if a.kind == "stream"]

    @property
    def routed(self) -> bool:
        """Whether the tenant's stream apps share its queue, routed by message type."""
        return self.stream.route_by is not None and bool(self.stream_apps())
