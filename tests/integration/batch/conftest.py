from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from simbdp.batch import BatchIngestManager
from simbdp.coredms.base import open_sink
from simbdp.datagen import reddit_comments
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.testing import make_platform, tenant_profile


def csv_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().to_pybytes()


class Env:
    """A platform home in tmp_path with a manager and a state store."""

    def __init__(self, home: Path, tenants: list[dict[str, Any]], **kw: Any):
        self.platform: Platform = make_platform(home, tenants, **kw)
        self.config = self.platform.config
        self.store = StateStore.open(self.config)
        self.manager = BatchIngestManager(self.platform, self.store)

    def staging(self, tenant: str) -> Path:
        return self.config.staging_dir(tenant)

    def ingest(self, tenant: str, *names: str) -> list[dict[str, Any]]:
        subs = self.manager.submit(tenant, [self.staging(tenant) / n for n in names])
        self.manager.run_until_idle(timeout_secs=120)
        return [self.store.record(s.record_id) for s in subs]

    def count(self, tenant: str, table: str = "comments", sink: str = "default") -> int:
        s = open_sink(self.config.sinks[sink])
        try:
            return s.count_rows(self.platform.tenant(tenant), table)
        finally:
            s.close()

    def outcome_files(self, tenant: str, outcome: str) -> list[str]:
        d = self.config.outcome_dir(tenant, outcome)
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Callable[..., Env]]:
    made: list[Env] = []

    def _make(tenants: list[dict[str, Any]] | None = None, **kw: Any) -> Env:
        made.append(Env(tmp_path / "home", tenants or [tenant_profile("acme")], **kw))
        return made[-1]
    yield _make
    for env in made:  # its idle warm workers exit
        env.manager.close()


@pytest.fixture
def comments() -> Callable[..., bytes]:
    def _make(n: int = 1000, seed: int = 0, start_id: int = 0) -> bytes:
        return csv_bytes(reddit_comments(n, seed=seed, start_id=start_id))
    return _make
