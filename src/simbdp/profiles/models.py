"""Pydantic models of the platform config and of tenant service profiles."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from urllib.parse import unquote

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

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "QUARANTINE_COLUMNS",
    "QUARANTINE_SUFFIX",
    "ROUTED_APP",
    "ApiSettings",
    "AppSpec",
    "AppsSettings",
    "BatchLimits",
    "BrokerSettings",
    "Column",
    "CsvOptions",
    "EncryptionSettings",
    "FileType",
    "PlatformConfig",
    "QualityRule",
    "SinkSettings",
    "StreamLimits",
    "TableSpec",
    "TenantProfile",
    "parse_age",
]

Identifier = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
FileType = Literal["csv", "json", "jsonl", "parquet"]
_KEY = re.compile(r"[a-z][a-z0-9_]*")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class Column(Model):
    name: Identifier
    """Column name: an identifier (lower-case letter, then letters, digits, ``_``; at most 63)."""
    type: str
    """Column type: string, int64, int32, int16, float64, float32, bool, date, timestamp,
    timestamptz, json or decimal(p,s) (aliases: text, int, bigint, double, ...)."""
    nullable: bool = True
    """Whether the column may be empty; a row with no value in a non-nullable column is rejected."""

    @field_validator("type")
    @classmethod
    def _known_type(cls, v: str) -> str:
        return normalize_type(v)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_AGE_SECS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
#: the column types each check applies to (None: any type)
_CHECK_TYPES: dict[str, tuple[str, ...] | None] = {
    "not_null": None, "unique": None, "in": None, "regex": None, "min": None,
    "max": None,
    "max_age": ("date", "timestamp", "timestamptz"),
    "min_length": ("string", "json"), "max_length": ("string", "json"),
}


def parse_age(text: str) -> float:
    """``90s``, ``30m``, ``12h``, ``7d``, ``2w`` in seconds; ValueError otherwise."""
    m = _AGE.match(text)
    if m is None:
        raise ValueError(f"age {text!r}: use a number and a unit s, m, h, d or w, e.g. '7d'")
    return float(m.group(1)) * _AGE_SECS[m.group(2)]


class QualityRule(Model):
    """A vectorised row check: rows failing it are quarantined with the rule's name.

    ``check`` is one of not_null, min, max, regex, in, unique, max_age, min_length,
    max_length; ``value`` its argument.
    """

    name: Identifier
    """Rule name, given as the reason of the rows it rejects."""
    column: Identifier
    """The column the rule checks."""
    check: Literal["not_null", "min", "max", "regex", "in", "unique", "max_age", "min_length",
                   "max_length"]
    """not_null; min, max (numbers, dates, timestamps); regex; in; unique (a value seen on an
    earlier row of the same file or micro-batch fails; nulls are not compared); max_age (a date
    or timestamp older than ``value`` fails); min_length, max_length (text, in characters)."""
    value: float | str | list[str] | None = None
    """The check's argument: a bound for min/max, a pattern for regex, a list for in, an age
    such as ``7d`` (units s, m, h, d, w) for max_age, a number of characters for
    min_length/max_length; none for not_null and unique."""

    @model_validator(mode="after")
    def _check_value(self) -> QualityRule:
        c, v = self.check, self.value
        what = f"quality rule {self.name!r} ({c})"
        if c in ("not_null", "unique") and v is not None:
            raise ValueError(f"{what} takes no value")
        if c in ("min", "max", "regex", "in", "max_age", "min_length", "max_length") \
                and v is None:
            raise ValueError(f"{what} needs a value")
        if c in ("min_length", "max_length") and (
                not isinstance(v, float | int) or v < 0 or v != int(v)):
            raise ValueError(f"{what}: value must be a whole number of characters, not {v!r}")
        if c == "max_age":
            if not isinstance(v, str):
                raise ValueError(f"{what}: value must be an age such as '7d', not {v!r}")
            parse_age(v)
        if c == "regex":
            try:
                re.compile(str(v))
            except re.error as e:
                raise ValueError(f"{what}: bad pattern {v!r}: {e}") from None
        return self

    @property
    def age_secs(self) -> float:
        """max_age: the value in seconds."""
        return parse_age(str(self.value))

    def problem(self, table: TableSpec) -> str | None:
        """Why this rule cannot check ``table`` (an unknown column, a check that does not fit
        the column's type), or None."""
        cols = {c.name: c.type for c in table.columns}
        if self.column not in cols:
            return (f"table {table.name!r}: quality rule {self.name!r} names unknown column "
                    f"{self.column!r} (columns: {', '.join(cols)})")
        kinds = _CHECK_TYPES[self.check]
        kind = cols[self.column].split("(")[0]
        if kinds is not None and kind not in kinds:
            return (f"table {table.name!r}: quality rule {self.name!r}: {self.check} does not "
                    f"apply to column {self.column!r} of type {cols[self.column]}")
        return None


QUARANTINE_SUFFIX = "_quarantine"
#: the columns a quarantine table adds to the failing row's values
QUARANTINE_COLUMNS = {"quality_reason": "string", "quality_source": "string",
                      "quality_ingestion": "string", "quality_row": "int64"}


class TableSpec(Model):
    """A table the tenant owns in its namespace of coredms."""

    name: Identifier
    """Table name in the tenant's namespace; a file whose name starts with it goes to it."""
    columns: list[Column] = Field(min_length=1)
    """The table's columns, in order (CSV headers are matched by name)."""
    primary_key: list[Identifier] = []
    """Key columns: a file's rows then upsert (last row wins) instead of appending."""
    key: str | None = None
    """Seed 002's Cassandra-style key, e.g. ``((subreddit, id), ups)``; sets primary_key."""
    sinks: list[str] = ["default"]
    """Names of platform sinks this table is written to (several sinks per table)."""
    quality: list[QualityRule] = []
    """Row checks; rows failing one are rejected with the rule's name."""
    min_pass_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of rows (0 to 1) of a file or stream micro-batch that must pass the checks (types,
    required columns, quality rules); below it the whole file is rejected (kept in
    ``rejected/``) or the whole micro-batch dead-lettered, nothing loaded, the rate in the
    reason. 0: never."""
    partition_by: list[Identifier] = []
    """Columns a lake (delta) sink partitions the table by; other sinks ignore it."""
    quarantine: bool = False
    """Also keep the rows that fail (a type, a required column, a quality rule) in a table
    ``<name>_quarantine`` in the same sinks, committed with the file: the row's values as
    text, ``quality_reason``, ``quality_source`` (the file), ``quality_ingestion`` (the
    record id) and ``quality_row`` (its number in the chunk). Batch files; a stream's failing
    messages go to its dead-letter queue."""

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
        problems = [p for r in self.quality if (p := r.problem(self)) is not None]
        if problems:
            raise ValueError("; ".join(problems))
        rules = [r.name for r in self.quality]
        if len(set(rules)) != len(rules):
            raise ValueError(f"table {self.name!r}: quality rule names must be unique")
        if self.quarantine:
            if len(self.name) + len(QUARANTINE_SUFFIX) > 63:
                raise ValueError(f"table {self.name!r}: a name over "
                                 f"{63 - len(QUARANTINE_SUFFIX)} characters leaves no room "
                                 f"for its quarantine table ({self.name}{QUARANTINE_SUFFIX})")
            clash = [c for c in QUARANTINE_COLUMNS if c in names]
            if clash:
                raise ValueError(f"table {self.name!r}: columns {clash} are the quarantine "
                                 "table's own")
        if not self.sinks:
            raise ValueError("sinks must name at least one sink")
        unknown = [c for c in self.partition_by if c not in names]
        if unknown:
            raise ValueError(f"partition_by columns {unknown} are not columns of the table")
        return self

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def quarantine_table(self) -> TableSpec:
        """The table of this table's failing rows (see ``quarantine``)."""
        cols = [{"name": c.name, "type": "string"} for c in self.columns]
        cols += [{"name": n, "type": t} for n, t in QUARANTINE_COLUMNS.items()]
        return TableSpec.model_validate({"name": self.name + QUARANTINE_SUFFIX,
                                         "columns": cols, "sinks": self.sinks})

    def arrow_schema(self) -> pa.Schema:
        import pyarrow as pa  # only where rows are handled: loading profiles does not need it

        keys = set(self.primary_key)
        return pa.schema(
            [pa.field(c.name, arrow_type(c.type), c.nullable and c.name not in keys)
             for c in self.columns]
        )


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


class SinkSettings(Model):
    kind: Literal["duckdb", "postgres", "delta"]
    """duckdb, postgres or delta (a Delta Lake folder)."""
    path: Path | None = None
    """duckdb: folder of per-tenant database files; delta: root folder of the tenants' Delta
    tables (``<path>/<namespace>/<table>``), a path or a ``file://`` URI (object stores such as
    ``s3://`` are refused for now: the lake's commit lock and message-id index need a local
    folder)."""
    dsn: SecretStr | None = None
    """postgres: connection string, e.g. ``postgresql://user:pw@host/db`` (kept secret)."""
    memory_limit_mb: int = Field(256, ge=64)
    """duckdb: memory limit of each connection (keyed tables need room for their index)."""
    append_memory_limit_mb: int = Field(128, ge=32)
    """duckdb: memory limit while a file streams into an unkeyed table (a few row groups)."""
    compact_min_files: int = Field(64, ge=0)
    """delta: ``simbdp serve`` compacts a table once it holds more data files than this (0:
    never; ``simbdp lake compact`` any time)."""
    target_file_mb: int = Field(128, ge=1)
    """delta: the size compaction aims at for each data file."""
    vacuum_retain_hours: float = Field(168.0, ge=0)
    """delta: files a compaction replaced, and files of writes that never committed, are
    deleted once this old (readers of older versions need them until then)."""

    @field_validator("path", mode="before")
    @classmethod
    def _local_uri(cls, v: object) -> object:
        if isinstance(v, str) and "://" in v:
            scheme, _, rest = v.partition("://")
            if scheme.lower() != "file":
                raise ValueError(
                    f"{v!r}: {scheme}:// is not supported yet (a sink's path is a local folder "
                    "or a file:// URI; the lake's commit lock and message-id index need a "
                    "local folder)")
            if not rest.startswith("/"):
                raise ValueError(f"{v!r}: a file:// URI names an absolute path (file:///srv/lake)")
            return unquote(rest)
        return v

    @model_validator(mode="after")
    def _check(self) -> SinkSettings:
        if self.kind == "postgres" and self.dsn is None:
            raise ValueError("a postgres sink needs a dsn")
        if self.kind != "postgres" and self.path is None:
            raise ValueError(f"a {self.kind} sink needs a path")
        return self


class BrokerSettings(Model):
    kind: Literal["embedded", "rabbitmq", "nats"] = "embedded"
    """embedded (no server), rabbitmq or nats."""
    url: SecretStr | None = None
    """rabbitmq or nats: server URL with the platform's credentials (kept secret)."""
    path: Path | None = None
    """embedded broker: folder of its queue databases (default ``home/queue``)."""
    lease_secs: float = Field(30.0, gt=0)
    """Seconds a delivery stays invisible to others before it is redelivered (not acked)."""
    nats_auth_file: Path | None = None
    """nats: the users file simbdp writes (0600) for the server config to ``include``; unset: NATS
    runs without per-tenant users."""
    nats_pid_file: Path | None = None
    """nats: the server's pid file, to reload it (SIGHUP) after the users file changed."""


class ApiSettings(Model):
    host: str = "127.0.0.1"
    """Address the HTTP API listens on."""
    port: int = Field(8470, ge=0, le=65535)
    """Port of the HTTP API (0: any free port)."""
    tls_cert: Path | None = None
    """TLS certificate file; with tls_key, the API serves HTTPS."""
    tls_key: Path | None = None
    """TLS private key file."""
    requests_per_minute: int = Field(600, ge=1)
    """Requests per minute per API key."""
    upload_bytes_per_minute: ByteSize = ByteSize(2 * 1024**3)
    """Uploaded bytes per minute per tenant."""
    upload_stall_secs: float = Field(30.0, gt=0)
    """An upload that sends nothing for this long is dropped."""
    metrics_public: bool = False
    """Serve ``/metrics`` without a key; by default it needs the operator's key."""


class AppsSettings(Model):
    """How tenant apps are confined (see :mod:`simbdp.apps.sandbox`)."""

    unconfined: bool = False
    """Run apps as plain processes where bubblewrap cannot confine them (said in every record)."""
    tmp_mb: int = Field(64, ge=1, le=65536)
    """Size of each app process's private writable /tmp."""
    pids_max: int = Field(128, ge=16)
    """Processes and threads of one app process and its children together."""


class PlatformConfig(Model):
    """Where a simbdp installation keeps its state, staging folders and sinks."""

    home: Path
    """The platform home (set by ``--home`` or ``SIMBDP_HOME``, not in the file)."""
    state_dsn: SecretStr | None = None
    """Unset: SQLite at ``home/state.sqlite``; else a PostgreSQL DSN (kept secret)."""
    sinks: dict[str, SinkSettings] = {}
    """Sinks by name; ``default`` is DuckDB under ``home/coredms`` unless given."""
    workers: int = Field(2, ge=1)
    """Files ingested at once (one worker process each)."""
    chunk_bytes: ByteSize = ByteSize(4 * 1024**2)
    """Bytes of a file handed to an app or a sink at a time."""
    stable_secs: float = Field(0.5, ge=0)
    """A file found by a rescan is taken once unchanged for this long."""
    rescan_secs: float = Field(5.0, gt=0)
    """Interval of the staging folders' rescan."""
    job_attempts: int = Field(3, ge=1)
    """Attempts of a file whose worker dies before it fails."""
    small_file_bytes: ByteSize = ByteSize(1024**2)
    """Uncompressed files up to this size, queued together for one tenant, share one
    transaction (each keeps its own record and ledger row); 0: every file alone."""
    group_max_files: int = Field(100, ge=1)
    """The most small files in one transaction."""
    group_max_bytes: ByteSize = ByteSize(16 * 1024**2)
    """The most bytes of small files in one transaction."""
    sink_outage_max_secs: float = Field(6 * 3600.0, gt=0)
    """A file whose sink is unavailable waits (back-off up to ``sink_retry_max_secs``, with jitter)
    for this long before it fails."""
    sink_retry_max_secs: float = Field(60.0, gt=0)
    """Longest back-off between two tries of a file whose sink is unavailable."""
    stop_grace_secs: float = Field(30.0, ge=0)
    """On stop, workers still running after this are killed; their files wait in inflight/."""
    report_interval_secs: float = Field(5.0, gt=0)
    """Interval of the stream instances' reports to the monitor."""
    broker: BrokerSettings = BrokerSettings()
    """The message broker of the stream path."""
    api: ApiSettings = ApiSettings()
    """The HTTP API of ``simbdp serve``."""
    apps: AppsSettings = AppsSettings()
    """How tenant apps are confined."""

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
