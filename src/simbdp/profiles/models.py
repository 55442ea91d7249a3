"""Pydantic models of the platform config and of tenant service profiles."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from simbdp.profiles.types import arrow_type, normalize_type

__all__ = [
    "ApiSettings",
    "AppSpec",
    "AppsSettings",
    "BatchLimits",
    "BrokerSettings",
    "Column",
    "CsvOptions",
    "FileType",
    "PlatformConfig",
    "QualityRule",
    "SinkSettings",
    "StreamLimits",
    "TableSpec",
    "TenantProfile",
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
FileType = Literal["csv", "json", "jsonl", "parquet"]
_KEY = re.compile(r"[a-z][a-z0-9_]*")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Column(Model):
    name: Identifier
    type: str
    nullable: bool = True

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        return normalize_type(v)


class QualityRule(Model):
    """A vectorised row check: rows failing it are quarantined with the rule's name.

    ``check`` is one of not_null, unique, min, max, regex, in; ``value`` its argument.
    """

    name: Identifier
    column: Identifier
    check: Literal["not_null", "min", "max", "regex", "in"]
    value: float | str | list[str] | None = None


class TableSpec(Model):
    """A table the tenant owns in its namespace of coredms."""

    name: Identifier
    columns: list[Column] = Field(min_length=1)
    primary_key: list[Identifier] = []
    #: seed 002's Cassandra-style key, e.g. "((subreddit, id), ups)"; sets primary_key
    key: str | None = None
    #: names of platform sinks this table is written to (several sinks per table)
    sinks: list[str] = ["default"]
    quality: list[QualityRule] = []

    @model_validator(mode="before")
    @classmethod
    def _key_to_primary_key(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("key") and not data.get("primary_key"):
            data = {**data, "primary_key": _KEY.findall(str(data["key"]))}
        return data

    @model_validator(mode="after")
    def _check(self) -> TableSpec:
        names = [c.name for c in self.columns]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"duplicate column names {sorted(dupes)}")
        missing = [k for k in self.primary_key if k not in names]
        if missing:
            raise ValueError(f"primary_key columns {missing} are not columns of the table")
        bad = [r.column for r in self.quality if r.column not in names]
        if bad:
            raise ValueError(f"quality rules name unknown columns {bad}")
        if not self.sinks:
            raise ValueError("sinks must name at least one sink")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def arrow_schema(self) -> pa.Schema:
        keys = set(self.primary_key)
        return pa.schema(
            [pa.field(c.name, arrow_type(c.type), c.nullable and c.name not in keys)
             for c in self.columns]
        )


class CsvOptions(Model):
    delimiter: str = Field(",", min_length=1, max_length=1)
    quote_char: str = Field('"', min_length=1, max_length=1)
    header: bool = True
    null_values: list[str] = [""]
    #: the longest text value read (CSV, JSON lines); a longer one fails the file, naming it
    max_field_bytes: ByteSize = Field(ByteSize(64 * 1024**2), ge=1024)


class BatchLimits(Model):
    file_types: list[FileType] = ["csv"]
    max_file_bytes: ByteSize = ByteSize(100 * 1024**2)
    max_files_per_ingestion: int = Field(100, ge=1)
    max_files_per_day: int = Field(1000, ge=0)
    max_bytes_per_day: ByteSize = ByteSize(10 * 1024**3)
    #: a worker still on one file after this is killed and the file failed
    max_file_secs: float = Field(3600.0, gt=0)
    #: limits on what a file holds once decompressed; ``max_file_bytes`` counts those bytes too
    max_rows_per_file: int = Field(100_000_000, ge=1)
    max_columns: int = Field(2_000, ge=1)


class StreamLimits(Model):
    max_messages_per_day: int = Field(10_000_000, ge=0)
    max_bytes_per_day: ByteSize = ByteSize(10 * 1024**3)
    max_message_bytes: ByteSize = ByteSize(1024**2)


class AppSpec(Model):
    """A tenant app: ``entrypoint`` is ``module:function`` in the tenant's app folder.

    Batch apps take files matching ``file_pattern``; stream apps consume the tenant's queue.
    """

    name: Identifier
    kind: Literal["batch", "stream"] = "batch"
    entrypoint: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    tables: list[Identifier] = Field(min_length=1)
    file_pattern: str = "*"
    timeout_secs: float = Field(300.0, gt=0)
    memory_mb: int = Field(1024, ge=64)
    #: typed input columns for CSV files (others are read as inferred)
    input_columns: dict[str, str] = {}
    # stream micro-batching
    batch_max_rows: int = Field(10_000, ge=1)
    batch_max_bytes: ByteSize = ByteSize(8 * 1024**2)
    batch_max_wait_ms: int = Field(500, ge=1)
    # stream scaling
    min_instances: int = Field(1, ge=0)
    max_instances: int = Field(4, ge=1)
    target_backlog: int = Field(5_000, ge=1)
    target_latency_ms: int = Field(1_000, ge=1)

    @field_validator("input_columns")
    @classmethod
    def _types(cls, v: dict[str, str]) -> dict[str, str]:
        return {k: normalize_type(t) for k, t in v.items()}

    @model_validator(mode="after")
    def _check(self) -> AppSpec:
        if self.min_instances > self.max_instances:
            raise ValueError("min_instances is above max_instances")
        return self


class TenantProfile(Model):
    """The service profile of one tenant: constraints, tables and apps."""

    tenant_id: Identifier
    namespace: Identifier | None = None
    enabled: bool = True
    tables: list[TableSpec] = Field(min_length=1)
    batch: BatchLimits = BatchLimits()
    stream: StreamLimits = StreamLimits()
    csv: CsvOptions = CsvOptions()
    apps: list[AppSpec] = []

    @model_validator(mode="after")
    def _check(self) -> TenantProfile:
        if self.namespace is None:
            object.__setattr__(self, "namespace", self.tenant_id)
        tables = [t.name for t in self.tables]
        if len(set(tables)) != len(tables):
            raise ValueError("table names must be unique")
        apps = [a.name for a in self.apps]
        if len(set(apps)) != len(apps):
            raise ValueError("app names must be unique")
        for a in self.apps:
            unknown = [t for t in a.tables if t not in tables]
            if unknown:
                raise ValueError(f"app {a.name!r} writes to unknown tables {unknown}")
        return self

    @property
    def schema_name(self) -> str:
        return self.namespace or self.tenant_id

    def table(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"tenant {self.tenant_id!r} has no table {name!r}")

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


class SinkSettings(Model):
    kind: Literal["duckdb", "postgres"]
    #: duckdb: folder of per-tenant database files
    path: Path | None = None
    dsn: SecretStr | None = None
    #: duckdb: memory limit of each connection (keyed tables need room for their index)
    memory_limit_mb: int = Field(256, ge=64)
    #: duckdb: memory limit while a file streams into an unkeyed table (a few row groups)
    append_memory_limit_mb: int = Field(128, ge=32)

    @model_validator(mode="after")
    def _check(self) -> SinkSettings:
        if self.kind == "postgres" and self.dsn is None:
            raise ValueError("a postgres sink needs a dsn")
        if self.kind != "postgres" and self.path is None:
            raise ValueError(f"a {self.kind} sink needs a path")
        return self


class BrokerSettings(Model):
    kind: Literal["embedded", "rabbitmq", "nats"] = "embedded"
    url: SecretStr | None = None
    #: embedded broker: folder of its queue databases
    path: Path | None = None
    #: seconds a delivery stays invisible to others before it is redelivered (not acked)
    lease_secs: float = Field(30.0, gt=0)
    #: nats: the users file simbdp writes (0600) for the server config to ``include``; unset:
    #: NATS runs without per-tenant users
    nats_auth_file: Path | None = None
    #: nats: the server's pid file, to reload it (SIGHUP) after the users file changed
    nats_pid_file: Path | None = None


class ApiSettings(Model):
    host: str = "127.0.0.1"
    port: int = Field(8470, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    requests_per_minute: int = Field(600, ge=1)
    upload_bytes_per_minute: ByteSize = ByteSize(2 * 1024**3)
    upload_stall_secs: float = Field(30.0, gt=0)


class AppsSettings(Model):
    """How tenant apps are confined (see :mod:`simbdp.apps.sandbox`)."""

    #: run apps as plain processes where bubblewrap cannot confine them (said in every record)
    unconfined: bool = False
    #: size of each app process's private writable /tmp
    tmp_mb: int = Field(64, ge=1, le=65536)
    #: processes and threads of one app process and its children together
    pids_max: int = Field(128, ge=16)


class PlatformConfig(Model):
    """Where a simbdp installation keeps its state, staging folders and sinks."""

    home: Path
    #: None: SQLite at ``home/state.sqlite``; else a PostgreSQL DSN
    state_dsn: SecretStr | None = None
    sinks: dict[str, SinkSettings] = {}
    workers: int = Field(2, ge=1)
    chunk_bytes: ByteSize = ByteSize(4 * 1024**2)
    stable_secs: float = Field(0.5, ge=0)
    rescan_secs: float = Field(5.0, gt=0)
    job_attempts: int = Field(3, ge=1)
    #: a file whose sink is unavailable waits (back-off up to ``sink_retry_max_secs``, with
    #: jitter) for this long before it fails
    sink_outage_max_secs: float = Field(6 * 3600.0, gt=0)
    sink_retry_max_secs: float = Field(60.0, gt=0)
    #: on stop, workers still running after this are killed; their files wait in inflight/
    stop_grace_secs: float = Field(30.0, ge=0)
    report_interval_secs: float = Field(5.0, gt=0)
    broker: BrokerSettings = BrokerSettings()
    api: ApiSettings = ApiSettings()
    apps: AppsSettings = AppsSettings()

    @model_validator(mode="after")
    def _defaults(self) -> PlatformConfig:
        if "default" not in self.sinks:
            sinks = {"default": SinkSettings(kind="duckdb", path=self.home / "coredms"),
                     **self.sinks}
            object.__setattr__(self, "sinks", sinks)
        if self.broker.kind == "embedded" and self.broker.path is None:
            broker = self.broker.model_copy(update={"path": self.home / "queue"})
            object.__setattr__(self, "broker", broker)
        return self

    # folders -------------------------------------------------------------------------------
    @property
    def tenants_dir(self) -> Path:
        return self.home / "tenants"

    def apps_dir(self, tenant: str) -> Path:
        return self.home / "apps" / tenant

    def tenant_dir(self, tenant: str) -> Path:
        return self.home / "data" / tenant

    def staging_dir(self, tenant: str) -> Path:
        """The tenant's client-staging-input-directory."""
        return self.tenant_dir(tenant) / "staging"

    def outcome_dir(self, tenant: str, outcome: str) -> Path:
        """``processed``, ``rejected`` or ``failed``, beside the staging folder."""
        return self.tenant_dir(tenant) / outcome
