from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from simbdp.api.app import create_app
from simbdp.state import StateStore
from simbdp.state.keys import OPERATOR, create_key
from simbdp.testing import make_platform, stream_tenant, tenant_profile


class Api:
    def __init__(self, home: Path, **config: object):
        acme = tenant_profile("acme", batch={"max_file_bytes": "100KB",
                                             "max_files_per_ingestion": 3})
        beta = stream_tenant("beta")
        self.platform = make_platform(home, [acme, beta], **config)
        self.store = StateStore.open(self.platform.config)
        self.client = TestClient(create_app(self.platform, self.store))
        self.keys = {t: create_key(self.store, t) for t in ("acme", "beta")}
        self.keys["op"] = create_key(self.store, OPERATOR)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


    def staged(self, tenant: str = "acme") -> list[str]:
        d = self.platform.config.staging_dir(tenant)
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture
def make_api(tmp_path: Path):  # type: ignore[no-untyped-def]
    return lambda **cfg: Api(tmp_path / "home", **cfg)


@pytest.fixture
def api(make_api) -> Api:  # type: ignore[no-untyped-def]
    return make_api(api={"upload_stall_secs": 1.0})
