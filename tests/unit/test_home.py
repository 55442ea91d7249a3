"""The start-up check of the platform home's permissions."""

from __future__ import annotations

import json
import os
from pathlib import Path

from simbdp.batch.staging import prepare_tenant_dirs
from simbdp.home import check_home, make_private
from simbdp.observe.logs import configure_logging
from simbdp.state import StateStore
from simbdp.testing import make_platform, tenant_profile


def _events(log: Path, event: str) -> list[dict[str, str]]:
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    return [x for x in lines if x["event"] == event]


def test_too_wide_paths_are_named_and_private_ones_are_not(tmp_path):
    platform = make_platform(tmp_path / "home", [tenant_profile("acme")])
    config = platform.config
    StateStore.open(config).close()
    make_private(config.home)
    log = tmp_path / "check.jsonl"  # outside the home: the check looks at the home only
    configure_logging(log)
    assert check_home(config) == []
    state = config.home / "state.sqlite"
    state.chmod(0o644)
    (config.home / "tenants").chmod(0o755)
    staged = prepare_tenant_dirs(config, "acme")
    (staged / "tenant-file.csv").write_text("x\n1\n")
    (staged / "tenant-file.csv").chmod(0o644)  # tenant input: not the platform's to judge
    wide = check_home(config)
    assert sorted(p for p, _ in wide) == [config.home / "state.sqlite", config.home / "tenants"]
    warned = {e["path"]: e["mode"] for e in _events(log, "home_permissions_too_wide")}
    assert warned == {str(state): "0644", str(config.home / "tenants"): "0755"}


def test_make_private_keeps_the_owner_bits(tmp_path):
    d = tmp_path / "app"
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(d / "pkg" / "run.sh", 0o755)
    os.chmod(d / "pkg", 0o755)
    make_private(d)
    assert (d / "pkg" / "run.sh").stat().st_mode & 0o777 == 0o700
    assert (d / "pkg").stat().st_mode & 0o777 == 0o700
