"""Entries in a staging folder that are not plain files of their own: rejected with the
reason, kept as they are in rejected/, never followed or read; the tenant's other files load."""

from __future__ import annotations

import json
import os
import stat
import threading
import time

import pytest

from simbdp.testing import drop, tenant_profile


def rejected_entry(env, tenant, name):  # type: ignore[no-untyped-def]
    folder = env.config.outcome_dir(tenant, "rejected")
    reason = json.loads((folder / f"{name}.reason.json").read_text())
    return folder / name, reason


def test_symlink_to_another_tenants_file(make_env, comments):
    env = make_env([tenant_profile("acme"), tenant_profile("beta")])
    theirs = drop(env.staging("beta") / "theirs.csv", comments(300, seed=7, start_id=5000))
    before = theirs.read_bytes()
    os.symlink(theirs, env.staging("acme") / "stolen.csv")
    drop(env.staging("acme") / "mine.csv", comments(100))
    link, good = env.ingest("acme", "stolen.csv", "mine.csv")
    assert link["outcome"] == "rejected"
    assert "'acme'" in link["reason"] and "'stolen.csv'" in link["reason"]
    assert "is a symlink" in link["reason"]
    assert good["outcome"] == "processed"
    assert env.count("acme") == 100  # nothing of beta's rows
    kept, reason = rejected_entry(env, "acme", "stolen.csv")
    assert kept.is_symlink() and os.readlink(kept) == str(theirs)  # the link itself moved
    assert reason["code"] == "not_regular_file" and reason["record"] == link["id"]
    assert theirs.read_bytes() == before  # beta's file untouched, still waiting
    assert env.ingest("beta", "theirs.csv")[0]["outcome"] == "processed"


def test_symlink_inside_the_staging_folder(make_env, comments):
    env = make_env()
    drop(env.staging("acme") / "real.csv", comments(200))
    os.symlink(env.staging("acme") / "real.csv", env.staging("acme") / "alias.csv")
    alias, real = env.ingest("acme", "alias.csv", "real.csv")
    assert alias["outcome"] == "rejected" and "is a symlink" in alias["reason"]
    assert real["outcome"] == "processed"
    assert env.count("acme") == 200
    kept, _ = rejected_entry(env, "acme", "alias.csv")
    assert kept.is_symlink()


def test_hard_link_to_a_file_outside(make_env, comments, tmp_path):
    env = make_env()
    outside = tmp_path / "private.csv"
    outside.write_bytes(comments(150, seed=3))
    os.link(outside, env.staging("acme") / "linked.csv")
    drop(env.staging("acme") / "mine.csv", comments(100))
    linked, good = env.ingest("acme", "linked.csv", "mine.csv")
    assert linked["outcome"] == "rejected"
    assert "'linked.csv' has 2 hard links" in linked["reason"] and "'acme'" in linked["reason"]
    assert good["outcome"] == "processed"
    assert env.count("acme") == 100
    kept, reason = rejected_entry(env, "acme", "linked.csv")
    assert reason["code"] == "hard_link"
    assert kept.stat().st_ino == outside.stat().st_ino and outside.exists()


def test_fifo_is_rejected_without_blocking(make_env, comments):
    env = make_env()
    os.mkfifo(env.staging("acme") / "pipe.csv")
    drop(env.staging("acme") / "mine.csv", comments(100))
    t0 = time.monotonic()
    pipe, good = env.ingest("acme", "pipe.csv", "mine.csv")
    assert time.monotonic() - t0 < 60
    assert pipe["outcome"] == "rejected" and "'pipe.csv' is a FIFO" in pipe["reason"]
    assert good["outcome"] == "processed"
    kept, _ = rejected_entry(env, "acme", "pipe.csv")
    assert stat.S_ISFIFO(kept.lstat().st_mode)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_serve_passes_over_odd_entries_and_keeps_going(make_env, comments, kind):
    env = make_env(stable_secs=0.2, rescan_secs=0.3)
    stop = threading.Event()
    t = threading.Thread(target=env.manager.serve, args=(stop,))
    t.start()
    try:
        odd = env.staging("acme") / "odd.csv"
        if kind == "fifo":
            os.mkfifo(odd)
        else:
            os.symlink("/etc/hostname", odd)
        drop(env.staging("acme") / "after.csv", comments(100))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
                env.count("acme") < 100 or "odd.csv" not in env.outcome_files("acme", "rejected")):
            time.sleep(0.2)
        assert env.count("acme") == 100
        assert "odd.csv" in env.outcome_files("acme", "rejected")
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert not any(env.staging("acme").iterdir())
    assert not any(env.config.tenant_dir("acme").joinpath("inflight").glob("*/*"))


def test_swap_in_staging_after_acceptance_changes_nothing_read(make_env, comments):
    env = make_env([tenant_profile("acme"), tenant_profile("beta")])
    theirs = drop(env.staging("beta") / "theirs.csv", comments(300, seed=7, start_id=5000))
    drop(env.staging("acme") / "a.csv", comments(100))
    [sub] = env.manager.submit("acme", [env.staging("acme") / "a.csv"])
    assert sub.accepted and sub.path.parent.parent.name == "inflight"
    # the accepted file is no longer in staging: replacing its name there reaches nothing
    assert not os.path.lexists(env.staging("acme") / "a.csv")
    os.symlink(theirs, env.staging("acme") / "a.csv")
    env.manager.run_until_idle(timeout_secs=60)
    assert env.store.record(sub.record_id)["outcome"] == "processed"
    assert env.count("acme") == 100
    assert (env.staging("acme") / "a.csv").is_symlink()  # a new drop, left for the next scan
