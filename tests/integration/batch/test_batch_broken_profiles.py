"""A tenant profile file that does not load disables that tenant alone, with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from simbdp.batch import BatchIngestManager
from simbdp.coredms.base import open_sink
from simbdp.profiles import load_platform
from simbdp.state import StateStore
from simbdp.testing import drop, make_platform, tenant_profile

SIMBDP = Path(sys.executable).with_name("simbdp")
BROKEN = {
    "syntax": ("tenant_id: beta\ntables: [\n", "syntax"),
    "schema": ("tenant_id: beta\ntables: []\nbatch: {max_file_bytes: lots}\n",
               "tables: List should have at least 1 item"),
}


def simbdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SIMBDP), *args], capture_output=True, text=True, timeout=120,
                          check=False)


def serve_until_idle(home: Path) -> StateStore:
    platform = load_platform(home)
    store = StateStore.open(platform.config)
    t = threading.Thread(target=BatchIngestManager(platform, store).serve,
                         args=(threading.Event(),), kwargs={"idle_exit": True})
    t.start()
    t.join(120)
    assert not t.is_alive()
    return store


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_good_tenant_runs_broken_one_waits_with_its_reason(tmp_path, comments, kind):
    home = tmp_path / "home"
    config = make_platform(home, [tenant_profile("acme")]).config
    text, words = BROKEN[kind]
    (config.tenants_dir / "beta.yaml").write_text(text)
    drop(config.staging_dir("acme") / "a.csv", comments(100))
    waiting = drop(config.staging_dir("beta") / "b.csv", comments(50, seed=1))

    store = serve_until_idle(home)
    [rec] = store.records()
    assert (rec["tenant"], rec["outcome"]) == ("acme", "processed")
    sink = open_sink(config.sinks["default"])
    try:
        assert sink.count_rows(load_platform(home).tenant("acme"), "comments") == 100
    finally:
        sink.close()
    assert waiting.read_bytes() == comments(50, seed=1)  # untouched, still in staging

    listed = simbdp("tenants", "list", "--home", str(home))
    assert listed.returncode == 0, listed.stderr
    beta_row = next(line for line in listed.stdout.splitlines() if " beta " in line)
    assert " no " in beta_row and "profile did not load" in beta_row
    assert "'beta' is disabled" in listed.stderr and words in listed.stderr
    report = simbdp("report", "--home", str(home))
    assert report.returncode == 0, report.stderr
    assert "disabled tenants" in report.stdout and "beta.yaml" in report.stdout
    logged = [json.loads(x) for x in (home / "logs" / "simbdp.jsonl").read_text().splitlines()]
    [line] = [x for x in logged if x["event"] == "profile_broken"][:1]
    assert line["tenant"] == "beta" and line["level"] == "error"
    assert "beta.yaml" in line["reason"] and words in line["reason"]
    assert simbdp("tenants", "check", str(config.tenants_dir)).returncode == 1
    refused = simbdp("ingest", "--tenant", "beta", "--home", str(home), str(waiting))
    assert refused.returncode == 2 and "disabled" in refused.stderr

    # fixed: the file that waited is taken
    (config.tenants_dir / "beta.yaml").write_text(yaml.safe_dump(tenant_profile("beta")))
    store = serve_until_idle(home)
    assert store.records("beta")[0]["outcome"] == "processed"
    assert not waiting.exists()
