"""Hostile tenant apps against the sandbox: every attempt fails, the platform sees nothing of it.

These run as root, like the default install, with bubblewrap and the cgroup controllers of this
machine; where bubblewrap is missing the runner refuses to start (tested last).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from simbdp.apps import AppContext, AppRunner
from simbdp.apps.cgroup import cgroup_problem
from simbdp.apps.sandbox import runtime_paths, sandbox_problem
from simbdp.errors import AppFailed, ConfigError
from simbdp.profiles.models import AppSpec
from simbdp.profiles.platform import AppsSettings

APP = '''
import os, socket, time
import pyarrow as pa

def read(data, ctx):
    with open(ctx.source, "rb") as f:
        return pa.table({"b": [f.read(100)]})

def listdir(data, ctx):
    return pa.table({"names": [os.listdir(ctx.source)]})

def write(data, ctx):
    with open(ctx.source, "x") as f:
        f.write("id,n\\n1,1\\n")
    return data

def connect(data, ctx):
    socket.create_connection(("127.0.0.1", int(ctx.source)), timeout=2).close()
    return data

def signal_platform(data, ctx):
    os.kill(int(ctx.source), 15)
    return data

def fork_bomb(data, ctx):
    for _ in range(200):
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
    return data

def hog(data, ctx):
    x = b"\\x01" * (5 * 1024 ** 3)
    return data

def fill_tmp(data, ctx):
    with open("/tmp/fill", "wb") as f:
        for _ in range(int(ctx.source)):
            f.write(b"\\x01" * 1024 ** 2)
    return data

def spin(data, ctx):
    while True:
        pass

def detach(data, ctx):
    if os.fork() == 0:
        os.setsid()
        os.execv("/bin/sleep", ["sleep", ctx.source])
    time.sleep(0.2)
    if ctx.chunk == 1:
        os._exit(0)
    return data

def environment(data, ctx):
    seen = [str(dict(os.environ))]
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with open(f"/proc/{pid}/environ", "rb") as f:
                seen.append(f.read().decode(errors="replace"))
    return pa.table({"env": ["\\n".join(seen)], "pids": [len([p for p in os.listdir("/proc")
                                                            if p.isdigit()])]})

def whoami(data, ctx):
    return pa.table({"uid": [os.getuid()], "hostname": [socket.gethostname()],
                     "root": [sorted(os.listdir("/"))], "etc": [sorted(os.listdir("/etc"))]})
'''
DATA = pa.table({"x": [1]})

pytestmark = pytest.mark.skipif(sandbox_problem() is not None and not os.environ.get("CI"),
                                reason=f"no sandbox here: {sandbox_problem()}")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A platform home with another tenant's data in it."""
    h = tmp_path / "home"
    for d in ("data/other/staging", "coredms", "tenants", "apps/evil", "data/evil/staging"):
        (h / d).mkdir(parents=True)
    (h / "data/other/staging/orders.csv").write_text("id,n\n1,42\n")
    (h / "coredms/other.duckdb").write_bytes(b"DUCK" * 100)
    (h / "state.sqlite").write_bytes(b"SQLite format 3\x00")
    (h / "tenants/other.yaml").write_text("tenant_id: other\n")
    (h / "apps/evil/w.py").write_text(APP)
    return h


def call(home: Path, fn: str, source: str = "x", chunk: int = 0, **kw: object) -> pa.Table:
    settings = kw.pop("settings", None)
    kw.setdefault("timeout_secs", 10)
    spec = AppSpec(name="a", entrypoint=f"w:{fn}", tables=["a"], **kw)  # type: ignore[arg-type]
    ctx = AppContext(tenant="evil", app="a", source=source, tables=("a",), chunk=chunk)
    with AppRunner(home / "apps/evil", spec, "evil", settings) as r:  # type: ignore[arg-type]
        assert r.confined
        return r.call(DATA, ctx)["a"]


def fails(home: Path, fn: str, source: str = "x", **kw: object) -> AppFailed:
    with pytest.raises(AppFailed) as e:
        call(home, fn, source, **kw)
    assert str(e.value).startswith("tenant 'evil': app 'a' on "), str(e.value)
    return e.value


@pytest.mark.parametrize("target", [
    "data/other/staging/orders.csv", "coredms/other.duckdb", "state.sqlite",
    "tenants/other.yaml", "/etc/shadow", "/etc/passwd", "/root/.bash_history",
])
def test_cannot_read_other_tenants_nor_the_platform(home: Path, target: str) -> None:
    path = target if target.startswith("/") else str(home / target)
    e = fails(home, "read", path)
    assert e.kind == "raised" and "FileNotFoundError" in str(e)


@pytest.mark.parametrize("folder", ["data/other/staging", "data", "coredms", ""])
def test_cannot_list_the_platform_home(home: Path, folder: str) -> None:
    e = fails(home, "listdir", str(home / folder))
    assert "FileNotFoundError" in str(e)


@pytest.mark.parametrize("target", ["data/other/staging/forged.csv", "tenants/evil2.yaml",
                                    "data/evil/staging/again.csv"])
def test_cannot_write_into_the_platform_home(home: Path, target: str) -> None:
    e = fails(home, "write", str(home / target))
    assert "FileNotFoundError" in str(e)
    assert not (home / target).exists()


def test_sees_its_own_app_folder_read_only(home: Path) -> None:
    e = fails(home, "write", "/app/w2.py")
    assert "Read-only file system" in str(e)


@pytest.mark.parametrize("port", [5432, 5672, 4222, 0])
def test_has_no_network(home: Path, port: int) -> None:
    with socket.socket() as api:  # a port of the platform, listening on the host
        api.bind(("127.0.0.1", 0))
        api.listen()
        e = fails(home, "connect", str(port or api.getsockname()[1]))
    assert "ConnectionRefusedError" in str(e) or "OSError" in str(e), str(e)


def test_cannot_signal_the_platform(home: Path) -> None:
    e = fails(home, "signal_platform", str(os.getpid()))
    assert "ProcessLookupError" in str(e)


def test_runs_as_nobody_in_a_bare_file_system(home: Path) -> None:
    out = call(home, "whoami").to_pylist()[0]
    assert out["uid"] == 65534 and out["hostname"] == "simbdp-app"
    runtime_tops = {Path(p).parts[1] for p in runtime_paths()}  # wherever the venv is
    assert set(out["root"]) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "etc", "proc",
                                "dev", "tmp", "app"} | runtime_tops
    assert set(out["etc"]) <= {"ld.so.cache", "localtime"}
    assert "data" not in out["root"] and "var" not in out["root"]


def test_does_not_see_the_platforms_environment_nor_processes(
        home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMBDP_STATE_DSN", "postgresql://admin:hunter2@db/state")
    out = call(home, "environment").to_pylist()[0]
    assert "hunter2" not in out["env"] and "SIMBDP" not in out["env"]
    assert out["pids"] <= 3  # bwrap's init, the app, nothing of the host


@pytest.mark.skipif(cgroup_problem() is not None, reason=f"no cgroups: {cgroup_problem()}")
def test_fork_bomb_ends_with_the_apps_failure(home: Path) -> None:
    e = fails(home, "fork_bomb", settings=AppsSettings(pids_max=64))
    assert e.kind == "raised" and "BlockingIOError" in str(e)


def test_allocating_5_gb_fails_as_memory(home: Path) -> None:
    e = fails(home, "hog", memory_mb=512)
    assert e.kind == "memory" and "memory limit exceeded (512 MB)" in str(e)


@pytest.mark.skipif(cgroup_problem() is not None, reason=f"no cgroups: {cgroup_problem()}")
def test_resident_memory_in_tmpfs_counts_against_the_limit(home: Path) -> None:
    # 700 MB in its /tmp: under RLIMIT_AS (not mapped), over the cgroup's 512 MB
    e = fails(home, "fill_tmp", "700", memory_mb=512, settings=AppsSettings(tmp_mb=2048))
    assert e.kind == "memory", str(e)


def test_private_tmp_is_bounded(home: Path) -> None:
    e = fails(home, "fill_tmp", "100", settings=AppsSettings(tmp_mb=16))
    assert e.kind == "raised" and "No space left on device" in str(e)


def test_spinning_forever_times_out(home: Path) -> None:
    t0 = time.monotonic()
    e = fails(home, "spin", timeout_secs=1)
    assert e.kind == "timeout" and time.monotonic() - t0 < 5


def _sleepers(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    return out.stdout.split()


@pytest.fixture
def marker() -> Iterator[str]:
    m = f"{os.getpid()}{time.monotonic_ns() % 100000}.5"
    yield m
    for pid in _sleepers(m):
        os.kill(int(pid), 9)


@pytest.mark.parametrize("chunk", [0, 1], ids=["returns", "exits"])
def test_detached_child_dies_with_the_app(home: Path, marker: str, chunk: int) -> None:
    spec = AppSpec(name="a", entrypoint="w:detach", tables=["a"], timeout_secs=10)
    ctx = AppContext(tenant="evil", app="a", source=marker, tables=("a",), chunk=chunk)
    with AppRunner(home / "apps/evil", spec, "evil") as r:
        if chunk == 0:
            r.call(DATA, ctx)
            assert _sleepers(marker)  # alive while the app lives
        else:
            with pytest.raises(AppFailed, match="crashed"):
                r.call(DATA, ctx)
    deadline = time.monotonic() + 3
    while _sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sleepers(marker)


def test_no_sandbox_refuses_unless_unconfined(home: Path, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    from simbdp.apps import runner

    monkeypatch.setattr(runner, "sandbox_problem", lambda: "bwrap is not installed")
    spec = AppSpec(name="a", entrypoint="w:whoami", tables=["a"], timeout_secs=10)
    with pytest.raises(ConfigError, match="cannot run confined: bwrap is not installed"):
        AppRunner(home / "apps/evil", spec, "evil")
    with AppRunner(home / "apps/evil", spec, "evil", AppsSettings(unconfined=True)) as r:
        assert not r.confined
        ctx = AppContext(tenant="evil", app="a", source="x", tables=("a",))
        assert r.call(DATA, ctx)["a"]["uid"].to_pylist() == [os.getuid()]


def test_folders_of_killed_platform_processes_are_swept(home: Path) -> None:
    import tempfile

    dead = Path(tempfile.gettempdir()) / "simbdp-app-4194999-evil-stale"  # above pid_max
    (dead / "app").mkdir(parents=True, exist_ok=True)
    call(home, "whoami")
    assert not dead.exists()
