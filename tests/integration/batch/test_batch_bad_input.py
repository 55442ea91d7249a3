"""Each kind of bad input: a clear reason naming the tenant and file, the file kept, the
manager up and other files unaffected."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from simbdp.testing import drop, tenant_profile


def reason_of(env, tenant, outcome, name):  # type: ignore[no-untyped-def]
    path = env.config.outcome_dir(tenant, outcome) / f"{name}.reason.json"
    return json.loads(path.read_text())


def test_good_file_loads_exactly_once_and_is_moved(make_env, comments):
    env = make_env()
    drop(env.staging("acme") / "comments.csv", comments(2000))
    [rec] = env.ingest("acme", "comments.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_in"] == rec["rows_loaded"] == 2000
    assert rec["read_secs"] >= 0 and rec["write_secs"] > 0
    assert env.count("acme") == 2000
    assert "comments.csv" in env.outcome_files("acme", "processed")
    assert not any(env.staging("acme").iterdir())


def test_same_file_twice_is_a_duplicate(make_env, comments):
    env = make_env()
    data = comments(500)
    drop(env.staging("acme") / "a.csv", data)
    env.ingest("acme", "a.csv")
    drop(env.staging("acme") / "a-again.csv", data)
    [rec] = env.ingest("acme", "a-again.csv")
    assert rec["outcome"] == "duplicate"
    assert "same content" in rec["reason"] and "acme" in rec["reason"]
    assert env.count("acme") == 500
    assert "a-again.csv" in env.outcome_files("acme", "rejected")


@pytest.mark.parametrize(
    ("name", "data", "code", "words"),
    [
        ("notes.xml", b"<x/>", "file_type", "not allowed"),
        ("empty.csv", b"", "empty_file", "empty"),
        ("a..b.csv", b"x\n1\n", "bad_name", "'..'"),
        ("ctl\x07.csv", b"x\n1\n", "bad_name", "control character"),
    ],
)
def test_rejected_before_any_work(make_env, name, data, code, words):
    env = make_env()
    (env.staging("acme") / name).write_bytes(data)
    [rec] = env.ingest("acme", name)
    assert rec["outcome"] == "rejected"
    assert words in rec["reason"] and "acme" in rec["reason"]
    assert reason_of(env, "acme", "rejected", name)["code"] == code
    assert name in env.outcome_files("acme", "rejected")  # kept, not deleted


def test_over_size_limit(make_env, comments):
    env = make_env([tenant_profile("acme", batch={"max_file_bytes": "10KB"})])
    drop(env.staging("acme") / "big.csv", comments(1000))
    [rec] = env.ingest("acme", "big.csv")
    assert rec["outcome"] == "rejected" and "over the limit" in rec["reason"]


def test_over_daily_files_and_bytes(make_env, comments):
    env = make_env([tenant_profile("acme", batch={"max_files_per_day": 2}),
                    tenant_profile("beta", batch={"max_bytes_per_day": "150KB"})])
    for i in range(3):
        drop(env.staging("acme") / f"f{i}.csv", comments(10, seed=i, start_id=i * 10))
        drop(env.staging("beta") / f"f{i}.csv", comments(1000, seed=i, start_id=i * 1000))
    acme = env.ingest("acme", "f0.csv", "f1.csv", "f2.csv")
    beta = env.ingest("beta", "f0.csv", "f1.csv", "f2.csv")
    assert [r["outcome"] for r in acme] == ["processed", "processed", "rejected"]
    assert "daily quota" in acme[2]["reason"] and "2/2 files" in acme[2]["reason"]
    assert [r["outcome"] for r in beta].count("rejected") >= 1
    assert env.count("acme") == 20


def test_too_many_files_at_once(make_env, comments):
    env = make_env([tenant_profile("acme", batch={"max_files_per_ingestion": 2})])
    for i in range(3):
        drop(env.staging("acme") / f"f{i}.csv", comments(10, seed=i))
    recs = env.ingest("acme", "f0.csv", "f1.csv", "f2.csv")
    assert {r["outcome"] for r in recs} == {"rejected"}
    assert "3 files in one ingestion" in recs[0]["reason"]


def test_symlink_out_of_staging(make_env, tmp_path):
    env = make_env()
    secret = tmp_path / "secret.csv"
    secret.write_text("id\n1\n")
    os.symlink(secret, env.staging("acme") / "link.csv")
    [rec] = env.ingest("acme", "link.csv")
    assert rec["outcome"] == "rejected" and "symlink" in rec["reason"]
    assert secret.exists()


@pytest.mark.parametrize(
    ("name", "make", "words"),
    [
        ("trunc.csv.gz", lambda good: gzip.compress(good)[:-100], "gzip"),
        ("fields.csv", lambda good: good + b"1,2,3\n", "line"),
        ("utf8.csv", lambda good: good + b'1,2,"r","x\xff\xfe",a,3,b\n', "UTF-8"),
    ],
)
def test_malformed_file_fails_with_reason_and_loads_nothing(make_env, comments, name, make,
                                                            words):
    env = make_env()
    drop(env.staging("acme") / name, make(comments(300)))
    drop(env.staging("acme") / "good.csv", comments(100, seed=5, start_id=10_000))
    recs = env.ingest("acme", name, "good.csv")
    assert recs[0]["outcome"] == "failed", recs[0]
    assert words in recs[0]["reason"] and name in recs[0]["reason"]
    assert recs[1]["outcome"] == "processed"
    assert env.count("acme") == 100  # nothing of the bad file, all of the good one
    assert name in env.outcome_files("acme", "failed")


def test_missing_required_column(make_env):
    env = make_env()
    drop(env.staging("acme") / "noid.csv", b"subreddit,ups\npython,3\n")
    [rec] = env.ingest("acme", "noid.csv")
    assert rec["outcome"] == "failed" and "'id'" in rec["reason"]


def test_wrong_type_value_rejects_only_that_row(make_env, comments):
    env = make_env()
    lines = comments(50).decode().splitlines()
    parts = lines[7].split(",")
    parts[1] = "lots"  # ups is an int column
    lines[7] = ",".join(parts)
    drop(env.staging("acme") / "typed.csv", ("\n".join(lines) + "\n").encode())
    [rec] = env.ingest("acme", "typed.csv")
    assert rec["outcome"] == "processed"
    assert (rec["rows_loaded"], rec["rows_rejected"]) == (49, 1)
    details = reason_of(env, "acme", "processed", "typed.csv")
    rejected = Path(details["rejected_rows_file"]).read_text()
    assert "lots" in rejected and "ups" in rejected
    assert env.count("acme") == 49


def test_part_files_and_growing_files_wait(make_env, comments):
    env = make_env(stable_secs=0.5)
    staging = env.staging("acme")
    (staging / "upload.csv.part").write_bytes(comments(10))
    (staging / ".hidden.csv").write_bytes(comments(10))
    growing = staging / "growing.csv"
    growing.write_bytes(comments(10)[:50])
    assert env.manager.scan() == 0  # nothing complete yet
    assert env.manager.scan() == 0
    assert (staging / "upload.csv.part").exists() and growing.exists()


def test_every_reason_file_has_the_same_fields(make_env, comments):
    from simbdp.batch.staging import REASON_FIELDS

    env = make_env()
    data = comments(50)
    drop(env.staging("acme") / "a.csv", data)
    drop(env.staging("acme") / "a-again.csv", data)
    drop(env.staging("acme") / "notes.txt", b"not a table")
    env.ingest("acme", "a.csv")
    env.ingest("acme", "a-again.csv", "notes.txt")
    done, dup = reason_of(env, "acme", "processed", "a.csv"), \
        reason_of(env, "acme", "rejected", "a-again.csv")
    early = reason_of(env, "acme", "rejected", "notes.txt")  # rejected before any work
    for r in (done, dup, early):
        assert list(r) == list(REASON_FIELDS), r
    assert (done["result"], dup["result"], early["result"]) == ("processed", "duplicate",
                                                                 "rejected")
    assert done["rows_loaded"] == 50 and early["rows_loaded"] is None
