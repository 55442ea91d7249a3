import time

import pyarrow as pa
import pytest

from simbdp.apps import AppContext, AppRunner
from simbdp.errors import AppFailed
from simbdp.profiles.models import AppSpec

APP = '''
import os
import time
import pyarrow as pa
import pyarrow.compute as pc

def identity(data, ctx):
    return data

def derive(data, ctx):
    return data.append_column("double", pc.multiply(data["x"], 2))

def split(data, ctx):
    return {"a": data, "b": data.slice(0, 1)}

def boom(data, ctx):
    raise ValueError("bad chunk %d" % ctx.chunk)

def hang(data, ctx):
    time.sleep(60)

def hog(data, ctx):
    x = bytearray(2 * 1024 ** 3)
    return data

def die(data, ctx):
    os._exit(3)

def nothing(data, ctx):
    return None

def stranger(data, ctx):
    return {"zzz": data}

def env(data, ctx):
    return pa.table({"k": sorted(os.environ)})

def steal(data, ctx):
    import secret_of_other
    return data
'''
DATA = pa.table({"x": [1, 2, 3]})
CTX = AppContext(tenant="acme", app="a", source="f.csv", tables=("a",))


@pytest.fixture
def app_dir(tmp_path):
    d = tmp_path / "apps" / "acme"
    d.mkdir(parents=True)
    (d / "w.py").write_text(APP)
    other = tmp_path / "apps" / "other"
    other.mkdir()
    (other / "secret_of_other.py").write_text("SECRET = 1\n")
    return d


def run(app_dir, fn, tables=("a",), **kw):  # type: ignore[no-untyped-def]
    spec = AppSpec(name="a", entrypoint=f"w:{fn}", tables=list(tables),
                   timeout_secs=kw.pop("timeout_secs", 5), **kw)
    with AppRunner(app_dir, spec, "acme") as r:
        return r.call(DATA, CTX)


def test_identity_and_derive(app_dir):
    assert run(app_dir, "identity")["a"].equals(DATA)
    assert run(app_dir, "derive")["a"].column("double").to_pylist() == [2, 4, 6]


def test_multi_table(app_dir):
    out = run(app_dir, "split", tables=("a", "b"))
    assert out["a"].num_rows == 3 and out["b"].num_rows == 1


@pytest.mark.parametrize(("fn", "kind", "words", "kw"), [
    ("boom", "raised", "ValueError: bad chunk 0 (at w.py:", {}),
    ("hang", "timeout", "time limit of 1 s", {"timeout_secs": 1}),
    ("hog", "memory", "memory limit of 300 MB", {"memory_mb": 300}),
    ("die", "crashed", "exit code 3", {}),
    ("nothing", "bad_output", "returned NoneType", {}),
    ("stranger", "bad_output", "unknown tables ['zzz']", {}),
    ("missing", "load", "cannot load w:missing", {}),
    ("steal", "raised", "No module named 'secret_of_other'", {}),
])
def test_failures_name_tenant_app_and_reason(app_dir, fn, kind, words, kw):
    t0 = time.monotonic()
    with pytest.raises(AppFailed) as e:
        run(app_dir, fn, **kw)
    assert e.value.kind == kind
    assert words in str(e.value) and "acme" in str(e.value) and "f.csv" in str(e.value)
    assert time.monotonic() - t0 < 10


def test_environment_is_scrubbed(app_dir, monkeypatch):
    monkeypatch.setenv("SIMBDP_SECRET", "hunter2")
    keys = run(app_dir, "env")["a"].column("k").to_pylist()
    assert "SIMBDP_SECRET" not in keys and set(keys) <= {"PATH", "LANG", "HOME",
                                                         "OMP_NUM_THREADS", "LC_CTYPE"}


def test_runner_recovers_after_a_crash(app_dir):
    spec = AppSpec(name="a", entrypoint="w:die", tables=["a"])
    with AppRunner(app_dir, spec, "acme") as r:
        for _ in range(2):
            with pytest.raises(AppFailed, match="crashed"):
                r.call(DATA, CTX)
