"""Keyed tables: a file of new keys is appended in one statement; a file that repeats keys
(already in the table, or twice in itself) is upserted, the last row of a key winning."""

from __future__ import annotations

import pytest

from simbdp.coredms.base import open_sink
from simbdp.testing import REDDIT_TABLE, drop, tenant_profile

KEYED = {**REDDIT_TABLE, "primary_key": ["subreddit", "id"]}
HEADER = "created_utc,ups,subreddit,id,author,score,body\n"


def _rows(env, sink: str, **where: str) -> dict[tuple[str, str], int]:  # type: ignore[no-untyped-def]
    s = open_sink(env.config.sinks[sink])
    try:
        t = s.read_rows(env.platform.tenant("acme"), "comments", limit=100,
                        where=where).to_pylist()
    finally:
        s.close()
    return {(r["subreddit"], r["id"]): r["ups"] for r in t}


@pytest.fixture(params=["duckdb", "postgres"])
def keyed_env(request, make_env):  # type: ignore[no-untyped-def]
    """(make an env with a keyed table in this sink, the sink's name)"""
    if request.param == "duckdb":
        return lambda **kw: make_env([tenant_profile("acme", tables=[KEYED])], stable_secs=0.0,
                                     **kw), "default"
    dsn = request.getfixturevalue("pg_dsn")
    table = {**KEYED, "sinks": ["pg"]}
    return lambda **kw: make_env([tenant_profile("acme", tables=[table])], stable_secs=0.0,
                                 sinks={"pg": {"kind": "postgres", "dsn": dsn}}, **kw), "pg"


def test_new_keys_then_repeated_keys_upsert_last_wins(keyed_env):  # type: ignore[no-untyped-def]
    make, sink = keyed_env
    env = make()
    drop(env.staging("acme") / "a.csv",
         (HEADER + "1,10,r,a,x,1,b\n" + "1,20,r,b,x,1,b\n").encode())
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed" and rec["rows_loaded"] == 2
    assert rec["rows_updated"] == 0
    # b is already in the table; c comes twice in the file itself: its last row wins
    drop(env.staging("acme") / "b.csv",
         (HEADER + "2,21,r,b,x,1,b\n" + "2,30,r,c,x,1,b\n" + "3,31,r,c,x,1,b\n").encode())
    [rec] = env.ingest("acme", "b.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert rec["rows_in"] == 3 and rec["rows_loaded"] == 2  # c is written once
    assert rec["rows_updated"] == 1  # b replaced the row of a.csv; c is new
    assert _rows(env, sink) == {("r", "a"): 10, ("r", "b"): 21, ("r", "c"): 31}
    assert env.count("acme", sink=sink) == 3


def test_key_repeated_across_chunks_of_one_file_last_wins(keyed_env):  # type: ignore[no-untyped-def]
    make, sink = keyed_env
    env = make(chunk_bytes=1024)
    body = "".join(f"1,{i},r,k{i},x,1,b\n" for i in range(200)) + "2,999,r,k0,x,1,b\n"
    drop(env.staging("acme") / "a.csv", (HEADER + body).encode())
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    assert env.count("acme", sink=sink) == 200
    assert _rows(env, sink, id="k0") == {("r", "k0"): 999}


def test_rows_updated_counts_keys_met_again_in_a_later_chunk(keyed_env):  # type: ignore[no-untyped-def]
    make, sink = keyed_env
    env = make(chunk_bytes=1024)  # chunks of 1 MiB, the smallest
    n = 100_000  # 2.2 MB: the file is read in more than one chunk
    body = "".join(f"1,{i},r,k{i},x,1,b\n" for i in range(n)) + "2,999,r,k0,x,1,b\n"
    drop(env.staging("acme") / "a.csv", (HEADER + body).encode())
    [rec] = env.ingest("acme", "a.csv")
    assert rec["outcome"] == "processed", rec["reason"]
    # k0 of the last chunk replaced the k0 of the first: loaded - updated = the table's growth
    assert (rec["rows_loaded"], rec["rows_updated"]) == (n + 1, 1)
    assert env.count("acme", sink=sink) == n
    assert _rows(env, sink, id="k0") == {("r", "k0"): 999}
