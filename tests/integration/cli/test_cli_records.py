"""``simbdp records show ID``: one ingestion whole, run as the real command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simbdp.datagen import write_reddit_csv
from simbdp.profiles import load_platform
from simbdp.state import StateStore
from simbdp.testing import make_platform, tenant_profile

SIMBDP = Path(sys.executable).with_name("simbdp")


def simbdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SIMBDP), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def test_records_show_prints_timings_rows_files_and_reason(tmp_path):
    home = tmp_path / "home"
    make_platform(home, [tenant_profile("acme")])
    data = tmp_path / "comments.csv"
    write_reddit_csv(data, 200)
    assert simbdp("ingest", "--tenant", "acme", "--home", str(home), str(data)).returncode == 0
    again = tmp_path / "again.csv"
    again.write_bytes(data.read_bytes())
    assert simbdp("ingest", "--tenant", "acme", "--home", str(home), str(again)).returncode == 0
    store = StateStore.open(load_platform(home).config)
    done = {r["source"]: r for r in store.records("acme")}

    out = simbdp("records", "show", done["comments.csv"]["id"], "--home", str(home))
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    processed = home / "data" / "acme" / "processed"
    rec = done["comments.csv"]
    assert rec["started_at"] <= rec["work_started_at"] <= rec["ended_at"]  # measured wait
    for words in ("outcome │ processed", "200 in, 200 loaded (0 of them updated a row with "
                  "the same key), 0 rejected", "work s",
                  "queued s", "accepted at", "no rule failed", "sink default │ committed",
                  str(processed / "comments.csv"),
                  str(processed / "comments.csv.reason.json")):
        assert words in text, (words, out.stdout)

    dup = simbdp("records", "show", done["again.csv"]["id"], "--home", str(home))
    text = " ".join(dup.stdout.split())
    assert "outcome │ duplicate" in text and "again.csv.reason.json" in text, dup.stdout
    assert "rejected" in text


def test_records_show_of_an_unknown_id_exit_2(tmp_path):
    home = tmp_path / "home"
    make_platform(home, [tenant_profile("acme")])
    out = simbdp("records", "show", "nope", "--home", str(home))
    assert out.returncode == 2 and "no record 'nope'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
