"""README's "Your first tenant" block, run word for word with the real ``simbdp`` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from simbdp.coredms.base import open_sink
from simbdp.profiles import load_platform

README = Path(__file__).parents[3] / "README.md"


def first_tenant_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Your first tenant\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```bash\n(.*?)^```$", section, flags=re.S | re.M)
    assert blocks, "README: no ```bash block under '## Your first tenant'"
    return blocks[0]


def test_readme_first_tenant_runs_word_for_word(tmp_path):
    block = first_tenant_block()
    assert "simbdp tenants init" in block and "simbdp ingest" in block
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIMBDP_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "processed" in run.stdout
    platform = load_platform(tmp_path / "home")
    sink = open_sink(platform.config.sinks["default"])
    try:
        rows = sink.read_rows(platform.tenant("acme"), "orders", limit=10).to_pylist()
    finally:
        sink.close()
    assert sorted((r["order_id"], r["amount"]) for r in rows) == [
        (1, 12.5), (2, None), (3, 7.25)]
