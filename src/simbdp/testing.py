"""Helpers for tests and benchmarks: build a platform home in a folder, drop files."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from simbdp.profiles import Platform, load_platform

if TYPE_CHECKING:
    from simbdp.state import StateStore
    from simbdp.stream.manager import StreamManager

__all__ = ["EVENTS_TABLE", "REDDIT_TABLE", "crash_at_fault", "drop", "free_port",
           "make_platform", "missing", "stream_tenant", "table_rows", "tenant_profile",
           "wait_for", "wait_port"]

REDDIT_TABLE: dict[str, Any] = {
    "name": "comments",
    "columns": [
        {"name": "created_utc", "type": "int"},
        {"name": "ups", "type": "int"},
        {"name": "subreddit", "type": "text", "nullable": False},
        {"name": "id", "type": "text", "nullable": False},
        {"name": "author", "type": "text"},
        {"name": "score", "type": "int"},
        {"name": "body", "type": "text"},
    ],
}


def tenant_profile(tenant_id: str, *, table: dict[str, Any] | None = None,
                   **overrides: Any) -> dict[str, Any]:
    """A tenant profile dict with one Reddit-comments table; ``overrides`` replace keys."""
    base: dict[str, Any] = {
        "tenant_id": tenant_id,
        "tables": [table or REDDIT_TABLE],
        "batch": {"file_types": ["csv", "json", "jsonl", "parquet"],
                  "max_file_bytes": "4GB", "max_files_per_day": 10_000,
                  "max_bytes_per_day": "100GB", "max_files_per_ingestion": 1000},
    }
    for k, v in overrides.items():
        base[k] = {**base[k], **v} if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


def make_platform(home: Path, tenants: list[dict[str, Any]], *,
                  apps: dict[str, dict[str, str]] | None = None, **config: Any) -> Platform:
    """Write ``platform.yaml``, the tenant profiles and app sources; load the platform.

    ``apps`` maps tenant -> {file name: source}.
    """
    home.mkdir(parents=True, exist_ok=True)
    cfg = {"workers": 2, "stable_secs": 0.1, "rescan_secs": 0.2, **config}
    (home / "platform.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (home / "tenants").mkdir(exist_ok=True)
    for t in tenants:
        (home / "tenants" / f"{t['tenant_id']}.yaml").write_text(yaml.safe_dump(t),
                                                                  encoding="utf-8")
    for tenant, files in (apps or {}).items():
        d = home / "apps" / tenant
        d.mkdir(parents=True, exist_ok=True)
        for name, src in files.items():
            (d / name).write_text(src, encoding="utf-8")
    return load_platform(home)


def drop(path: Path, data: bytes) -> Path:
    """Write a file the way a careful client does: a ``.part`` name, then a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name}.part")
    part.write_bytes(data)
    part.replace(path)
    return path


EVENTS_TABLE: dict[str, Any] = {"name": "events", "primary_key": ["id"],
          "columns": [{"name": "id", "type": "text"}, {"name": "n", "type": "int"},
                      {"name": "note", "type": "text"}]}
OTHER_TABLE: dict[str, Any] = {"name": "other", "columns": [{"name": "x", "type": "int"}]}


def stream_tenant(tenant: str = "acme", entrypoint: str | None = None, **app: Any
                  ) -> dict[str, Any]:
    """A tenant with an ``events`` table and a stream app ``ev`` writing to it."""
    spec = {"name": "ev", "kind": "stream", "tables": ["events"], "batch_max_rows": 200,
            "batch_max_wait_ms": 100, "timeout_secs": 5, **app}
    if entrypoint:
        spec["entrypoint"] = entrypoint
    return {"tenant_id": tenant, "tables": [EVENTS_TABLE, OTHER_TABLE], "apps": [spec],
            "stream": {"max_message_bytes": "2KB"}}


def crash_at_fault(platform: Platform, store: StateStore, fault: str, *,
                   faults: Path | None = None, tenant: str = "acme", app: str = "ev",
                   runs: str | None = None, secs: float = 60.0) -> tuple[StreamManager, Path]:
    """Set the fault point ``fault`` (the file ``<faults>/<fault>``; ``faults`` is the home's
    ``.faults`` unless given), start one stream instance of ``app`` and wait for it to die
    there: exit 137, the SIGKILL it gives itself.

    ``runs``: the app whose instances run ``app``, if another (a routed tenant's). Returns the
    manager, for the caller to shut down, and the fault file: unlink it to let the next
    instance through. Raises RuntimeError, the manager shut down, if the instance did not
    exit with 137 within ``secs``.
    """
    from simbdp.stream.manager import StreamManager

    folder = faults if faults is not None else platform.config.home / ".faults"
    folder.mkdir(parents=True, exist_ok=True)
    point = folder / fault
    point.touch()
    manager = StreamManager(platform, store, grace_secs=5)
    try:
        store.set_desired(tenant, app, 1)
        manager.reconcile()
        [inst] = manager.apps[(tenant, runs or app)].instances
        deadline = time.monotonic() + secs
        while inst.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if inst.proc.returncode != 137:
            raise RuntimeError(f"tenant {tenant!r}: the instance of {runs or app!r} did not die "
                               f"at fault point {fault!r} within {secs:g} s "
                               f"(exit {inst.proc.returncode})")
    except BaseException:
        manager.shutdown()
        raise
    return manager, point


def missing(what: str) -> NoReturn:
    """A test's service or tool is not here: skip it, or fail it where
    ``SIMBDP_REQUIRE_SERVICES=1`` (CI), so nothing is silently left untested."""
    import pytest

    if os.environ.get("SIMBDP_REQUIRE_SERVICES") == "1":
        pytest.fail(what)
    pytest.skip(what)


def free_port() -> int:
    """A TCP port of 127.0.0.1 free now (for a server a test or benchmark starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, secs: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:``port``; TimeoutError after ``secs``."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {secs} s")


def wait_for(cond: Callable[[], object], secs: float = 30.0, every: float = 0.1) -> bool:
    """Poll ``cond`` until it is true (True) or ``secs`` have passed (False)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return False


def table_rows(platform: Platform, sink: str, tenant: str, table: str, *, order_by: str,
               limit: int = 1000) -> list[dict[str, Any]]:
    """A tenant table's rows in one sink, as dicts sorted by ``order_by``."""
    from simbdp.coredms.base import open_sink

    s = open_sink(platform.config.sinks[sink])
    try:
        got = s.read_rows(platform.tenant(tenant), table, limit=limit).to_pylist()
    finally:
        s.close()
    return sorted(got, key=lambda r: r[order_by])
