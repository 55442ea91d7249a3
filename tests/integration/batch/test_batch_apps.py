"""Tenant apps in the batch path: wrangling, and every way an app can fail its file only."""

from __future__ import annotations

import pytest

from simbdp.testing import REDDIT_TABLE, drop, tenant_profile

APP = '''
import time
import pyarrow as pa
import pyarrow.compute as pc

def upper(data, ctx):
    return data.set_column(data.schema.get_field_index("subreddit"), "subreddit",
                           pc.utf8_upper(data["subreddit"]))

def boom(data, ctx):
    raise ValueError("cannot wrangle chunk %d of %s" % (ctx.chunk, ctx.source))

def hang(data, ctx):
    time.sleep(60)

def hog(data, ctx):
    x = bytearray(2 * 1024 ** 3)
    return data

def wrong(data, ctx):
    return pa.table({"nope": [1, 2]})
'''


def app_tenant(fn: str, **kw: object) -> dict:
    return tenant_profile("acme", apps=[{"name": "a", "entrypoint": f"wrangle:{fn}",
                                         "tables": ["comments"], "timeout_secs": 2,
                                         "memory_mb": 400, **kw}])


def test_app_wrangles_rows(make_env, comments):
    env = make_env([app_tenant("upper")], apps={"acme": {"wrangle.py": APP}})
    drop(env.staging("acme") / "c.csv", comments(300))
    [rec] = env.ingest("acme", "c.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["app"] == "a" and rec["app_secs"] > 0
    from simbdp.coredms.base import open_sink

    sink = open_sink(env.config.sinks["default"])
    rows = sink.read_rows(env.platform.tenant("acme"), "comments", limit=5)
    sink.close()
    assert all(s == s.upper() for s in rows.column("subreddit").to_pylist())


@pytest.mark.parametrize(
    ("fn", "words"),
    [("boom", "cannot wrangle"), ("hang", "time"), ("hog", "memory"), ("wrong", "nope")],
)
def test_failing_app_fails_only_its_file(make_env, comments, fn, words):
    other = tenant_profile("beta")
    env = make_env([app_tenant(fn), other], apps={"acme": {"wrangle.py": APP}})
    drop(env.staging("acme") / "c.csv", comments(100))
    drop(env.staging("beta") / "c.csv", comments(100))
    env.manager.submit("acme", [env.staging("acme") / "c.csv"])
    env.manager.submit("beta", [env.staging("beta") / "c.csv"])
    env.manager.run_until_idle(timeout_secs=90)
    acme = env.store.records("acme")[0]
    beta = env.store.records("beta")[0]
    assert acme["outcome"] == "failed"
    assert words in acme["reason"].lower() or words in acme["reason"], acme["reason"]
    assert "c.csv" in env.outcome_files("acme", "failed")
    assert beta["outcome"] == "processed" and env.count("beta") == 100
    assert env.count("acme") == 0


def test_two_tables_without_app_route_by_name(make_env, comments):
    users = {"name": "users", "columns": [{"name": "id", "type": "int"},
                                           {"name": "name", "type": "text"}]}
    env = make_env([tenant_profile("acme", tables=[REDDIT_TABLE, users])])
    drop(env.staging("acme") / "users-1.csv", b"id,name\n1,ann\n2,bob\n")
    drop(env.staging("acme") / "comments-1.csv", comments(10))
    drop(env.staging("acme") / "other.csv", comments(10))
    recs = env.ingest("acme", "users-1.csv", "comments-1.csv", "other.csv")
    assert [r["outcome"] for r in recs] == ["processed", "processed", "rejected"]
    assert env.count("acme", "users") == 2
