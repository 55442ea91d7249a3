"""Expected failures of the CLI: one line that says what and what to do, a documented exit
code (README "Exit codes"), never a traceback."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simbdp.api.app import serve_api
from simbdp.datagen import write_reddit_csv
from simbdp.state import StateStore
from simbdp.state.keys import create_key
from simbdp.testing import free_port, make_platform, stream_tenant, tenant_profile, wait_port

SIMBDP = Path(sys.executable).with_name("simbdp")


def simbdp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SIMBDP), *args], capture_output=True, text=True, timeout=300,
                          check=False)


def _one_error_line(stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.splitlines() if ln.startswith("error")]
    assert len(lines) == 1, stderr
    for w in words:
        assert w in lines[0], stderr


@pytest.fixture
def server(tmp_path):  # type: ignore[no-untyped-def]
    """``simbdp``'s API served for real over plain HTTP on a free port."""
    port = free_port()
    platform = make_platform(tmp_path / "home", [tenant_profile("acme")],
                             api={"port": port, "host": "127.0.0.1"})
    key = create_key(StateStore.open(platform.config), "acme")
    stop = threading.Event()
    thread = threading.Thread(target=serve_api, args=(platform, stop), daemon=True)
    thread.start()
    wait_port(port, 20)
    yield f"http://127.0.0.1:{port}", key
    stop.set()
    thread.join(30)


def _push(url: str, key: str, tenant: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return simbdp("push", "--server", url, "--key", key, "--tenant", tenant, str(folder))


def test_push_with_a_wrong_key_says_so_exit_2(server, tmp_path):
    url, _ = server
    out = _push(url, "sbdp_nope_nope", "acme", tmp_path)
    assert out.returncode == 2, out.stderr
    _one_error_line(out.stderr, "refused the key (401)", "ask the operator for a new one")


def test_push_for_an_unknown_tenant_says_so_exit_2(server, tmp_path):
    url, key = server
    out = _push(url, key, "nobody", tmp_path)
    assert out.returncode == 2, out.stderr
    _one_error_line(out.stderr, "tenant 'nobody'", "check --tenant")


def test_push_to_no_server_exit_3(tmp_path):
    out = _push(f"http://127.0.0.1:{free_port()}", "sbdp_x_y", "acme", tmp_path)
    assert out.returncode == 3, out.stderr
    _one_error_line(out.stderr, "cannot reach the server", "simbdp serve")


def test_push_of_an_allowed_file_exit_0(server, tmp_path):
    url, key = server
    folder = tmp_path / "out"
    folder.mkdir()
    write_reddit_csv(folder / "a.csv", 50)
    first = _push(url, key, "acme", folder)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "sent" in first.stdout


def _home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    make_platform(home, [tenant_profile("acme"), stream_tenant("beta")])
    return home


def test_ingest_unknown_tenant_and_missing_file_exit_2(tmp_path):
    home = _home(tmp_path)
    data = tmp_path / "a.csv"
    write_reddit_csv(data, 20)
    out = simbdp("ingest", "--tenant", "nobody", "--home", str(home), str(data))
    assert out.returncode == 2
    _one_error_line(out.stderr, "unknown tenant 'nobody'", "simbdp tenants add")
    out = simbdp("ingest", "--tenant", "acme", "--home", str(home), str(tmp_path / "no.csv"))
    assert out.returncode == 2
    _one_error_line(out.stderr, "no such file")


def test_ingest_a_duplicate_is_not_an_error(tmp_path):
    home = _home(tmp_path)
    data = tmp_path / "a.csv"
    write_reddit_csv(data, 20)
    assert simbdp("ingest", "--tenant", "acme", "--home", str(home), str(data)).returncode == 0
    again = simbdp("ingest", "--tenant", "acme", "--home", str(home), str(data))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "duplicate" in again.stdout


def test_stream_and_publish_for_an_unknown_tenant_or_app_exit_2(tmp_path):
    from simbdp.cli.main import app

    home = str(_home(tmp_path))
    lines = tmp_path / "m.jsonl"
    lines.write_text('{"id": "a", "n": 1}\n')
    runner = CliRunner()
    for args, words in (
            (["stream", "start", "--tenant", "nobody", "--app", "ev"], "unknown tenant"),
            (["stream", "scale", "--tenant", "beta", "--app", "nope", "--instances", "1"],
             "has no app 'nope'"),
            (["publish", str(lines), "--tenant", "nobody"], "unknown tenant"),
            (["tenants", "show", "nobody"], "unknown tenant")):
        out = runner.invoke(app, [*args, "--home", home])
        assert out.exit_code == 2, (args, out.output)
        assert out.exception is None or isinstance(out.exception, SystemExit), args
        _one_error_line(out.stderr, words)


def test_tenants_check_prints_patterns_as_written(tmp_path):
    from simbdp.cli.main import app

    bad = tmp_path / "Bad-Name.yaml"
    bad.write_text(yaml.safe_dump(tenant_profile("Bad-Name")))
    out = CliRunner().invoke(app, ["tenants", "check", str(bad)])
    assert out.exit_code == 1
    assert "[a-z]" in out.stderr and "Traceback" not in out.stderr, out.stderr
