"""``platform.yaml``: sinks, the broker, the API, tenant apps, the platform itself."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pydantic import ByteSize, Field, SecretStr, field_validator, model_validator

from simbdp.profiles.base import Model

__all__ = ["ApiSettings", "AppsSettings", "BrokerSettings", "PlatformConfig", "SinkSettings"]


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
