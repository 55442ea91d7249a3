"""Live reload: tenant profiles added, changed, broken or removed while ``run_platform``
serves take effect within seconds, for the batch manager and the API alike."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from simbdp.profiles import Platform
from simbdp.service import run_platform
from simbdp.state import StateStore
from simbdp.state.keys import create_key
from simbdp.testing import drop, free_port, make_platform, tenant_profile


def _wait(check: Callable[[], Any], secs: float = 15) -> Any:
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    return check()


class Served:
    def __init__(self, platform: Platform, port: int):
        self.platform, self.config, self.port = platform, platform.config, port
        self.store = StateStore.open(self.config)

    def write(self, profile: dict[str, Any]) -> None:
        path = self.config.tenants_dir / f"{profile['tenant_id']}.yaml"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(profile))
        tmp.replace(path)

    def outcome(self, tenant: str, name: str) -> str | None:
        recs = [r for r in self.store.records(tenant) if r["source"] == name]
        done = [r["outcome"] for r in recs if r["outcome"] not in ("running", "waiting")]
        return done[0] if done else None

    def decided(self, tenant: str, action: str) -> list[dict[str, Any]]:
        return [d for d in self.store.decisions(tenant) if d["action"] == action]

    def get(self, key: str, path: str) -> int:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}",
                                     headers={"Authorization": f"Bearer {key}"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except urllib.error.URLError:
            return 0  # not listening yet

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = (self.config.home / "logs" / "simbdp.jsonl").read_text().splitlines()
        return [x for x in map(json.loads, lines) if x.get("event") == event]


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    from simbdp.observe.logs import configure_logging

    port = free_port()
    platform = make_platform(tmp_path / "home", [tenant_profile("acme")],
                             api={"port": port})
    configure_logging(platform.config.home / "logs" / "simbdp.jsonl")
    s = Served(platform, port)
    stop = threading.Event()
    store = StateStore.open(platform.config)
    t = threading.Thread(target=run_platform, args=(platform, store, stop),
                         kwargs={"reload_secs": 0.3}, daemon=True)
    t.start()
    assert _wait(lambda: s.get("nokey", "/healthz") == 200, 30)
    try:
        yield s
    finally:
        stop.set()
        t.join(60)
        assert not t.is_alive()


def test_added_tenant_is_ingested_and_answered_then_removed_one_is_left_alone(
        served, comments):
    key = create_key(served.store, "beta")
    assert served.get(key, "/v1/tenants/beta/profile") == 404

    served.write(tenant_profile("beta"))
    assert _wait(lambda: served.decided("beta", "profile_added"))
    drop(served.config.staging_dir("beta") / "b1.csv", comments(100))
    assert _wait(lambda: served.outcome("beta", "b1.csv")) == "processed"
    assert served.get(key, "/v1/tenants/beta/profile") == 200
    [line] = [x for x in served.logged("profiles_reloaded") if "beta" in x["added"]]
    assert line["removed"] == [] and line["broken"] == []

    (served.config.tenants_dir / "beta.yaml").unlink()
    assert _wait(lambda: served.decided("beta", "profile_removed"))
    assert _wait(lambda: served.get(key, "/v1/tenants/beta/profile") == 404)
    later = drop(served.config.staging_dir("beta") / "b2.csv", comments(50, seed=1))
    drop(served.config.staging_dir("acme") / "a1.csv", comments(20, seed=2))
    assert _wait(lambda: served.outcome("acme", "a1.csv")) == "processed"  # still served
    time.sleep(1.0)
    assert later.read_bytes() == comments(50, seed=1)  # untouched, in staging
    assert served.outcome("beta", "b2.csv") is None


def test_changed_limit_applies_to_later_files_and_a_broken_profile_disables_its_tenant(
        served, comments):
    served.write(tenant_profile("beta"))
    assert _wait(lambda: served.decided("beta", "profile_added"))
    small = tenant_profile("acme")
    small["batch"] = {**small["batch"], "max_file_bytes": 1000}
    served.write(small)
    assert _wait(lambda: served.decided("acme", "profile_changed"))
    drop(served.config.staging_dir("acme") / "big.csv", comments(100))
    assert _wait(lambda: served.outcome("acme", "big.csv")) == "rejected"
    [rec] = [r for r in served.store.records("acme") if r["source"] == "big.csv"]
    assert "over the limit of 1000 bytes" in rec["reason"]

    (served.config.tenants_dir / "beta.yaml").write_text("tenant_id: beta\ntables: [\n")
    [broken] = _wait(lambda: served.decided("beta", "profile_broken"))
    assert "beta.yaml" in broken["reason"] and "syntax" in broken["reason"]
    [line] = _wait(lambda: [x for x in served.logged("profiles_reloaded")
                            if x["broken"] == ["beta"]])
    assert line["removed"] == ["beta"]
    assert any(x["tenant"] == "beta" for x in served.logged("profile_broken"))
    waiting = drop(served.config.staging_dir("beta") / "b.csv", comments(10, seed=3))
    drop(served.config.staging_dir("acme") / "small.csv", comments(2, seed=4))
    assert _wait(lambda: served.outcome("acme", "small.csv")) == "processed"
    time.sleep(1.0)
    assert waiting.exists() and served.outcome("beta", "b.csv") is None


def test_disabled_tenant_files_stay_in_staging_until_enabled_again(served, comments):
    served.write(tenant_profile("beta", enabled=False))
    assert _wait(lambda: served.decided("beta", "profile_added"))
    waiting = drop(served.config.staging_dir("beta") / "b.csv", comments(10))
    drop(served.config.staging_dir("acme") / "a.csv", comments(10, seed=1))
    assert _wait(lambda: served.outcome("acme", "a.csv")) == "processed"
    time.sleep(1.0)
    assert waiting.exists() and served.outcome("beta", "b.csv") is None

    served.write(tenant_profile("beta"))
    assert _wait(lambda: served.decided("beta", "profile_changed"))
    assert _wait(lambda: served.outcome("beta", "b.csv")) == "processed"


def test_files_left_in_flight_of_a_tenant_that_comes_back_are_ingested(served, comments):
    from simbdp.batch.staging import claim, prepare_tenant_dirs

    # a manager stopped while beta's file was in flight; beta was then removed: its file waits
    prepare_tenant_dirs(served.config, "beta")
    staged = drop(served.config.staging_dir("beta") / "left.csv", comments(30))
    claim(served.config, "beta", staged)
    time.sleep(0.5)
    assert served.outcome("beta", "left.csv") is None

    served.write(tenant_profile("beta"))
    assert _wait(lambda: served.outcome("beta", "left.csv")) == "processed"


def test_a_changed_platform_yaml_is_logged_with_its_keys_and_a_restart_hint(served):
    path = served.config.home / "platform.yaml"
    settings = yaml.safe_load(path.read_text()) if path.exists() else {}
    path.write_text(yaml.safe_dump({**settings, "workers": 7}))
    [line] = _wait(lambda: served.logged("platform_config_changed"))
    assert line["keys"] == ["workers"] and "restart" in line["hint"]
    path.write_text("api: [\n")
    [broken] = _wait(lambda: served.logged("platform_config_broken"))
    assert "platform.yaml" in broken["reason"]
