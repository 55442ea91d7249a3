"""The alert rules shipped in deploy/prometheus, checked and unit-tested by promtool."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"


def need(binary: str) -> str:
    """The path of a Prometheus binary; skip without it (fail in CI)."""
    path = shutil.which(binary)
    if path is None:
        msg = f"{binary} is not installed (Debian package prometheus)"
        if os.environ.get("SIMBDP_REQUIRE_SERVICES") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.mark.parametrize("args", [["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]])
def test_promtool_accepts_the_rules_and_each_alert_fires(args):
    r = subprocess.run([need("promtool"), *args], cwd=DEPLOY, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr
