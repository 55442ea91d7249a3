"""Live reload end to end: `simbdp tenants add` beside a running `simbdp serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from simbdp.datagen import reddit_comments
from simbdp.state import StateStore
from simbdp.state.keys import create_key
from simbdp.testing import drop, free_port, make_platform, tenant_profile

SIMBDP = Path(sys.executable).with_name("simbdp")



def _status(url: str, key: str) -> int:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except urllib.error.URLError:
        return 0


def _wait(check, secs: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if got := check():
            return got
        time.sleep(0.1)
    return check()


def test_tenant_added_with_the_cli_is_served_without_a_restart(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    port = free_port()
    home = tmp_path / "home"
    config = make_platform(home, [tenant_profile("acme")], api={"port": port}).config
    store = StateStore.open(config)
    key = create_key(store, "beta")
    url = f"http://127.0.0.1:{port}/v1/tenants/beta/profile"
    serve = subprocess.Popen([str(SIMBDP), "serve", "--home", str(home)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _wait(lambda: _status(url, key) == 404, 60)
        profile = tmp_path / "beta.yaml"
        profile.write_text(yaml.safe_dump(tenant_profile("beta")))
        added = subprocess.run([str(SIMBDP), "tenants", "add", str(profile), "--home",
                                str(home)], capture_output=True, text=True, timeout=60)
        assert added.returncode == 0, added.stderr
        t0 = time.monotonic()
        out = pa.BufferOutputStream()
        pacsv.write_csv(reddit_comments(100, seed=1), out)
        drop(config.staging_dir("beta") / "b.csv", out.getvalue().to_pybytes())
        assert _wait(lambda: [r for r in store.records("beta")
                              if r["outcome"] == "processed"])
        assert time.monotonic() - t0 < 10
        assert _status(url, key) == 200
        logged = [json.loads(x) for x in
                  (home / "logs" / "simbdp.jsonl").read_text().splitlines()]
        assert any(x["event"] == "profiles_reloaded" and x["added"] == ["beta"]
                   for x in logged)
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
    assert serve.returncode == 0, serve.stderr.read().decode() if serve.stderr else ""
