"""``simbdp`` run as a real command: what it leaves in the platform home."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import yaml

from simbdp.datagen import write_reddit_csv
from simbdp.profiles import load_platform
from simbdp.state import StateStore
from simbdp.testing import REDDIT_TABLE, tenant_profile

SIMBDP = Path(sys.executable).with_name("simbdp")


def simbdp(*args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    """Run the command as an operator's shell would, with a common umask of 022."""
    return subprocess.run([str(SIMBDP), *args], capture_output=True, text=True, timeout=300,
                          umask=umask, check=False)


def test_ingest_leaves_only_private_folders_and_files(tmp_path):
    home = tmp_path / "home"
    profile = tmp_path / "acme.yaml"
    app = {"name": "ident", "entrypoint": "ident:run", "tables": ["comments"]}
    profile.write_text(yaml.safe_dump(tenant_profile("acme", table=REDDIT_TABLE, apps=[app])))
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "ident.py").write_text("def run(data, ctx):\n    return data\n")
    os.chmod(apps / "ident.py", 0o644)
    added = simbdp("tenants", "add", str(profile), "--app-dir", str(apps), "--home", str(home))
    assert added.returncode == 0, added.stderr
    data = tmp_path / "comments.csv"
    write_reddit_csv(data, 500)
    done = simbdp("ingest", "--tenant", "acme", "--home", str(home), str(data))
    assert done.returncode == 0, done.stdout + done.stderr  # the app reads its 0600 copy
    seen = set()
    for dirpath, dirnames, filenames in os.walk(home):
        for name in [*dirnames, *filenames, ""]:
            path = Path(dirpath) / name
            mode = stat.S_IMODE(path.lstat().st_mode)
            want = 0o700 if path.is_dir() else 0o600
            assert mode == want, f"{path} is {mode:04o}"
            seen.add(path.relative_to(home).as_posix())
    for expected in ("state.sqlite", "coredms/coredms-acme.duckdb", "logs/simbdp.jsonl",
                     "tenants/acme.yaml", "apps/acme/ident.py",
                     "data/acme/processed/comments.csv"):
        assert expected in seen, sorted(seen)
    assert "home_permissions_too_wide" not in (home / "logs" / "simbdp.jsonl").read_text()
    store = StateStore.open(load_platform(home).config)  # after the walk: it makes a -wal
    [rec] = store.records("acme")
    assert (rec["outcome"], rec["app"], rec["rows_loaded"]) == ("processed", "ident", 500)
    store.close()
