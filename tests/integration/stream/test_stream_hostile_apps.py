"""A hostile tenant's stream app, run by a real instance: its attacks dead-letter its own
messages with the reason; the other tenant's stream and the platform carry on."""

from __future__ import annotations

from pathlib import Path

from simbdp.testing import stream_tenant

APP = '''
import os, socket

HOME = {home!r}

def attack(data, ctx):
    n = data["n"][0].as_py()
    if n == 1:
        open(HOME + "/state.sqlite", "rb").read()
    if n == 2:
        os.listdir(HOME + "/coredms")
    if n == 3:
        socket.create_connection(("127.0.0.1", 5432), timeout=2)
    if n == 4:
        open(HOME + "/data/good/staging/forged.csv", "x").write("x")
    if n == 5:
        os.kill(1, 9)  # bwrap's init in its own namespace, not the host's
    return data
'''


def test_stream_app_attacks_fail_only_its_messages(make_stream_env, tmp_path: Path):
    home = tmp_path / "home"
    env = make_stream_env([stream_tenant("bad", entrypoint="w:attack", batch_max_rows=1),
                           stream_tenant("good")],
                          apps={"bad": {"w.py": APP.format(home=str(home))}})
    rows = [{"id": f"e{i}", "n": i, "note": "x"} for i in range(7)]
    env.publish("bad", rows, id_field="id")
    env.publish("good", rows, id_field="id")
    reports = env.drain("bad")
    env.drain("good")
    reasons = {d.id: d.headers["x-reason"] for d in env.dead_letters("bad")}
    assert "FileNotFoundError" in reasons["e1"] and "FileNotFoundError" in reasons["e2"]
    assert "ConnectionRefusedError" in reasons["e3"]
    assert "FileNotFoundError" in reasons["e4"]
    assert set(reasons) == {"e1", "e2", "e3", "e4"}, reasons
    assert env.count("bad") == 3 and env.count("good") == 7
    assert not (env.config.staging_dir("good") / "forged.csv").exists()
    assert reports and all(r["sandbox"] == "bwrap" for r in reports)
