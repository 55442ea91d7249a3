"""Legal but hard files load whole; hostile ones stop at the tenant's limits with a clear
reason; nothing of a failed file is counted as loaded."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from simbdp.batch.job import FileJob, run_file_job
from simbdp.datagen import reddit_comments
from simbdp.testing import REDDIT_TABLE, drop, tenant_profile

HEADER = b"created_utc,ups,subreddit,id,author,score,body\n"
ROW = b"1420070400,17,python,c1,user1,3,data lake stream batch tenant quota arrow\n"


def reason_file(env, tenant, outcome, name):  # type: ignore[no-untyped-def]
    path = env.config.outcome_dir(tenant, outcome) / f"{name}.reason.json"
    return json.loads(path.read_text())


def write_quoted_newlines_csv(path: Path, rows: int, share: float = 0.05) -> Path:
    """Reddit comments where ``share`` of the bodies hold a quoted newline, in 200k-row
    chunks; every body is quoted as pyarrow (and csv.writer, when needed) writes it."""
    schema = reddit_comments(1).schema
    with pacsv.CSVWriter(path, schema) as w:
        for start in range(0, rows, 200_000):
            t = reddit_comments(min(200_000, rows - start), seed=start, start_id=start)
            body = t.column("body")
            mask = pa.array(np.arange(t.num_rows) % round(1 / share) == 0)
            multi = pc.binary_join_element_wise(body, "second line, \"quoted\"", "\n")
            w.write_table(t.set_column(6, "body", pc.if_else(mask, multi, body)))
    return path


def test_gzip_bomb_is_stopped_at_the_limit(make_env):
    env = make_env([tenant_profile("acme", batch={"max_file_bytes": "100MB"})])
    chunk = ROW * (16 * 1024**2 // len(ROW))
    member = gzip.compress(chunk, compresslevel=9)
    data = gzip.compress(HEADER) + member * (2 * 1024**3 // len(chunk))  # 2 GB inflated
    assert len(data) < 10 * 1024**2
    drop(env.staging("acme") / "bomb.csv.gz", data)
    drop(env.staging("acme") / "good.csv.gz", gzip.compress(HEADER + ROW * 1000))
    t0 = time.monotonic()
    bomb, good = env.ingest("acme", "bomb.csv.gz", "good.csv.gz")
    assert time.monotonic() - t0 < 60
    assert bomb["outcome"] == "rejected", bomb
    assert "decompressed" in bomb["reason"] and "acme" in bomb["reason"]
    assert bomb["rows_loaded"] == 0
    assert reason_file(env, "acme", "rejected", "bomb.csv.gz")["code"] == "file_too_big"
    assert good["outcome"] == "processed" and env.count("acme") == 1000
    # the daily byte quota counts what was read of the bomb (up to the limit), not 4 MB
    used = env.store.usage("acme", bomb["quota_day"])["bytes"]
    assert used >= 100 * 1000**2, used


def test_job_reports_decompressed_bytes(make_env, tmp_path):
    env = make_env([tenant_profile("acme", batch={"max_file_bytes": "10MB"})])
    profile = env.platform.tenant("acme")
    ok = tmp_path / "ok.csv.gz"
    plain = HEADER + ROW * 50_000
    ok.write_bytes(gzip.compress(plain))
    res = run_file_job(env.config, profile, FileJob("r1", "acme", ok, ok.stat().st_size))
    assert res.outcome == "processed" and res.decompressed_bytes == len(plain)
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(HEADER + ROW * 400_000))  # 29 MB inflated
    res = run_file_job(env.config, profile, FileJob("r2", "acme", bomb, bomb.stat().st_size))
    assert res.outcome == "rejected" and res.code == "file_too_big"
    assert 10 * 1000**2 < res.decompressed_bytes < 20 * 1024**2 and res.rows_loaded == 0


def test_100mb_csv_with_quoted_newlines_loads_whole(make_env, tmp_path):
    env = make_env()
    rows = 720_000
    path = write_quoted_newlines_csv(tmp_path / "nl.csv", rows)
    assert path.stat().st_size > 95 * 1000**2
    path.replace(env.staging("acme") / "nl.csv")
    [rec] = env.ingest("acme", "nl.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_loaded"] == rows and env.count("acme") == rows


def test_a_failed_file_reports_no_rows_loaded(make_env):
    env = make_env(chunk_bytes="1MB")
    drop(env.staging("acme") / "late.csv", HEADER + ROW * 200_000 + b"1,2,3\n")
    [rec] = env.ingest("acme", "late.csv")
    assert rec["outcome"] == "failed" and "line 200002: expected 7 fields, saw 3" in rec["reason"]
    assert rec["rows_loaded"] == 0 and env.count("acme") == 0


def test_a_5mb_field_loads(make_env):
    env = make_env()
    big = b"x" * (5 * 1024**2)
    drop(env.staging("acme") / "big.csv",
         HEADER + ROW * 100_000 + b'1,2,python,big,u,3,"' + big + b'"\n' + ROW * 10)
    [rec] = env.ingest("acme", "big.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert env.count("acme") == 100_011


def test_duplicate_header_column_is_named(make_env):
    env = make_env()
    drop(env.staging("acme") / "dup.csv", b"id,subreddit,id\nc1,python,c2\n")
    [rec] = env.ingest("acme", "dup.csv")
    assert rec["outcome"] == "failed"
    assert "column 'id' more than once" in rec["reason"] and "acme" in rec["reason"]


def test_20000_columns_are_refused_quickly(make_env):
    env = make_env()
    names = [f"c{i}" for i in range(20_000)]
    drop(env.staging("acme") / "wide.csv",
         (",".join(names) + "\n" + ",".join("1" * len(names)) + "\n").encode())
    drop(env.staging("acme") / "next.csv", HEADER + ROW * 10)
    t0 = time.monotonic()
    wide, nxt = env.ingest("acme", "wide.csv", "next.csv")
    assert time.monotonic() - t0 < 30
    assert wide["outcome"] == "rejected" and "20000 columns" in wide["reason"]
    assert reason_file(env, "acme", "rejected", "wide.csv")["code"] == "too_many_columns"
    assert nxt["outcome"] == "processed"


def test_jsonl_rejects_only_rows_that_do_not_cast(make_env):
    env = make_env()
    rows = []
    for i in range(30_000):
        ups: object = [i, str(i), "lots"][i % 3]  # number, numeric text, not a number
        rows.append(json.dumps({"id": f"c{i}", "subreddit": "python", "ups": ups,
                                "body": i if i % 2 else "text"}))
    drop(env.staging("acme") / "mixed.jsonl", ("\n".join(rows) + "\n").encode())
    [rec] = env.ingest("acme", "mixed.jsonl")
    assert rec["outcome"] == "processed", rec["reason"]
    assert (rec["rows_loaded"], rec["rows_rejected"]) == (20_000, 10_000)
    details = reason_file(env, "acme", "processed", "mixed.jsonl")
    rejected = Path(details["rejected_rows_file"]).read_text().splitlines()
    assert len(rejected) == 10_001 and "'lots' is not int" in rejected[1]


@pytest.mark.parametrize("sink", ["duckdb", "postgres"])
def test_nul_byte_in_text(make_env, request, sink):
    if sink == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        table = {**REDDIT_TABLE, "sinks": ["pg"]}
        env, sink = make_env([tenant_profile("acme", tables=[table])],
                             sinks={"pg": {"kind": "postgres", "dsn": dsn}}), "pg"
    else:
        env, sink = make_env(), "default"
    drop(env.staging("acme") / "nul.csv",
         HEADER + ROW * 500 + b'1,2,python,c9,u,3,"a\x00b"\n' + ROW * 499)
    [rec] = env.ingest("acme", "nul.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    if sink == "pg":
        assert (rec["rows_loaded"], rec["rows_rejected"]) == (999, 1)
        details = reason_file(env, "acme", "processed", "nul.csv")
        assert "NUL byte" in Path(details["rejected_rows_file"]).read_text()
    else:
        assert rec["rows_loaded"] == 1000
    assert env.count("acme", sink=sink) == rec["rows_loaded"]


def test_file_name_with_a_newline_is_refused(make_env):
    env = make_env()
    name = "two\nlines.csv"
    (env.staging("acme") / name).write_bytes(HEADER + ROW)
    [rec] = env.ingest("acme", name)
    assert rec["outcome"] == "rejected" and "control character" in rec["reason"]
    assert reason_file(env, "acme", "rejected", name)["code"] == "bad_name"


def test_jsonl_with_a_field_that_is_not_a_column_fails_naming_it(make_env):
    env = make_env()
    drop(env.staging("acme") / "extra.jsonl",
         b'{"id": "c1", "subreddit": "python", "nope": 1}\n')
    [rec] = env.ingest("acme", "extra.jsonl")
    assert rec["outcome"] == "failed" and "unexpected columns ['nope']" in rec["reason"]
