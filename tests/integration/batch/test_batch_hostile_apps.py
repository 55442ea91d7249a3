"""A hostile tenant's batch apps, run by the real manager as root: every attack fails its own
file with a clear reason; the platform, its home and the other tenant carry on untouched."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from simbdp.testing import drop, tenant_profile

APP = '''
import os, socket, time

HOME = {home!r}

def steal(data, ctx):
    open(HOME + "/data/good/staging/keep.csv", "rb").read()

def state(data, ctx):
    open(HOME + "/state.sqlite", "rb").read()

def coredms(data, ctx):
    os.listdir(HOME + "/coredms")

def shadow(data, ctx):
    open("/etc/shadow").read()

def forge(data, ctx):
    with open(HOME + "/data/good/staging/forged.csv", "x") as f:
        f.write("created_utc,ups,subreddit,id,author,score,body\\n1,1,x,forged,a,1,b\\n")

def profile(data, ctx):
    with open(HOME + "/tenants/zzz.yaml", "x") as f:
        f.write("not: [valid")

def postgres(data, ctx):
    socket.create_connection(("127.0.0.1", 5432), timeout=2)

def rabbitmq(data, ctx):
    socket.create_connection(("127.0.0.1", 5672), timeout=2)

def nats(data, ctx):
    socket.create_connection(("127.0.0.1", 4222), timeout=2)

def forks(data, ctx):
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)

def hog(data, ctx):
    x = b"\\x01" * (5 * 1024 ** 3)

def spin(data, ctx):
    while True:
        pass

def environ(data, ctx):
    raise RuntimeError(" ".join(sorted(os.environ)))
'''

ATTACKS = {  # app -> what the file's failure reason says
    "steal": "FileNotFoundError", "state": "FileNotFoundError",
    "coredms": "FileNotFoundError", "shadow": "FileNotFoundError",
    "forge": "FileNotFoundError", "profile": "FileNotFoundError",
    "postgres": "ConnectionRefusedError", "rabbitmq": "ConnectionRefusedError",
    "nats": "ConnectionRefusedError", "forks": "BlockingIOError",
    "hog": "memory limit exceeded", "spin": "timed out",
}


@pytest.mark.slow
def test_each_attack_fails_its_file_and_the_others_carry_on(make_env, comments, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SIMBDP_SECRET_TOKEN", "hunter2")  # the platform's own environment
    home = tmp_path / "home"
    apps = [{"name": name, "entrypoint": f"evil:{name}", "tables": ["comments"],
             "file_pattern": f"{name}-*.csv", "timeout_secs": 3, "memory_mb": 512}
            for name in [*ATTACKS, "environ"]]
    env = make_env([tenant_profile("bad", apps=apps), tenant_profile("good")],
                   apps={"bad": {"evil.py": APP.format(home=str(home))}})
    drop(env.staging("good") / "keep.csv", comments(50))
    names = [f"{name}-1.csv" for name in [*ATTACKS, "environ"]]
    for n in names:
        drop(env.staging("bad") / n, comments(20))
    tenants_before = sorted(os.listdir(home / "tenants"))

    bad = env.ingest("bad", *names)
    [good] = env.ingest("good", "keep.csv")

    reasons = {r["source"]: r for r in bad}
    for name, words in ATTACKS.items():
        rec = reasons[f"{name}-1.csv"]
        assert rec["outcome"] == "failed", rec
        assert words in rec["reason"], rec["reason"]
        assert rec["reason"].startswith("tenant 'bad': app "), rec["reason"]
        assert rec["sandbox"] == "bwrap"
    leaked = reasons["environ-1.csv"]["reason"]
    assert "SIMBDP_SECRET_TOKEN" not in leaked and "hunter2" not in leaked
    assert sorted(env.outcome_files("bad", "failed")) == sorted(
        [*names, *(f"{n}.reason.json" for n in names)])
    assert env.count("bad") == 0
    # the other tenant and the platform carry on, untouched
    assert good["outcome"] == "processed" and env.count("good") == 50
    assert not (env.staging("good") / "forged.csv").exists()
    assert sorted(os.listdir(home / "tenants")) == tenants_before
    assert {r["source"] for r in env.store.records("good")} == {"keep.csv"}
