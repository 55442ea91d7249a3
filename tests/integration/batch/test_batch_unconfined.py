"""Where bubblewrap cannot run, apps run only when the operator says so, and it shows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from simbdp.testing import make_platform, tenant_profile

APP = "def same(data, ctx):\n    return data\n"
SIMBDP = str(Path(sys.executable).with_name("simbdp"))


def _simbdp(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # no bwrap on this PATH: the platform cannot confine apps
    env = {**os.environ, "PATH": "/nonexistent", "COLUMNS": "200"}
    return subprocess.run([SIMBDP, *args, "--home", str(home)], capture_output=True, text=True,
                          env=env, timeout=120)


def test_without_bubblewrap_apps_need_an_explicit_unconfined(tmp_path: Path, comments):
    home = tmp_path / "home"
    apps = [{"name": "same", "entrypoint": "w:same", "tables": ["comments"]}]
    make_platform(home, [tenant_profile("acme", apps=apps)], apps={"acme": {"w.py": APP}})
    data = tmp_path / "c.csv"
    data.write_bytes(comments(30))

    refused = _simbdp(home, "ingest", "--tenant", "acme", str(data))
    assert refused.returncode == 2
    assert "cannot run confined" in refused.stderr and "bubblewrap" in refused.stderr
    assert "apps.unconfined" in refused.stderr and "acme" in refused.stderr

    cfg = yaml.safe_load((home / "platform.yaml").read_text())
    (home / "platform.yaml").write_text(yaml.safe_dump({**cfg, "apps": {"unconfined": True}}))
    ran = _simbdp(home, "ingest", "--tenant", "acme", str(data))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    log = (home / "logs" / "simbdp.jsonl").read_text()
    assert "apps_unconfined" in log
    report = _simbdp(home, "report")
    assert "tenant acme: 1 app runs without the sandbox" in report.stdout, report.stdout
