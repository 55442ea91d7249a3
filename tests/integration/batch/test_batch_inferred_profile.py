"""A profile written by ``simbdp tenants init`` loads its own sample file whole."""

from __future__ import annotations

import gzip
import shutil

import yaml
from typer.testing import CliRunner

from simbdp.cli.main import app
from simbdp.datagen import write_flights_csv


def test_inferred_flights_profile_loads_every_row_with_none_rejected(tmp_path, make_env):
    sample = write_flights_csv(tmp_path / "flights.csv", 50_000)
    gz = tmp_path / "flights.csv.gz"
    with sample.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    out = tmp_path / "air.yaml"
    run = CliRunner().invoke(app, ["tenants", "init", "air", "--from", str(gz), "-o", str(out)])
    assert run.exit_code == 0, run.output
    profile = yaml.safe_load(out.read_text())
    table = profile["tables"][0]
    assert table["name"] == "flights" and len(table["columns"]) == 19
    assert profile["csv"] == {"null_values": ["", "NA"]}
    nullable = {c["name"] for c in table["columns"] if c.get("nullable", True)}
    assert nullable == {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time", "tailnum"}
    assert {c["name"]: c["type"] for c in table["columns"]}["time_hour"] == "timestamp"
    env = make_env([profile])
    assert env.platform.broken == {}
    staging = env.staging("air")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copy(gz, staging / gz.name)
    [rec] = env.ingest("air", gz.name)
    assert (rec["outcome"], rec["rows_loaded"], rec["rows_rejected"]) == ("processed", 50_000, 0)
    assert env.count("air", "flights") == 50_000
