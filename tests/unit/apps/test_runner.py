import os
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from simbdp.apps import AppContext, AppRunner
from simbdp.errors import AppFailed, ConfigError
from simbdp.profiles.models import AppSpec

APP = '''
import os
import time
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.compute as pc

def identity(data, ctx):
    return data

def derive(data, ctx):
    out = data.rename_columns(["n", "s"])
    return out.append_column("double", pc.multiply(out["n"], 2)).drop_columns(["s"])

def split(data, ctx):
    return {"a": data, "b": data.slice(0, 1).to_batches()[0]}

def only_b(data, ctx):
    return {"b": data}

def boom(data, ctx):
    raise ValueError("bad chunk %d" % ctx.chunk)

def hang(data, ctx):
    time.sleep(60)

def hog(data, ctx):
    x = bytearray(2 * 1024 ** 3)
    return data

def die(data, ctx):
    os._exit(3)

def abort(data, ctx):
    os.abort()

def nothing(data, ctx):
    return None

def a_list(data, ctx):
    return [data]

def stranger(data, ctx):
    return {"zzz": data}

def env(data, ctx):
    return pa.table({"k": sorted(os.environ)})

def steal(data, ctx):
    import secret_of_other
    return data

def peek(data, ctx):
    return pa.table({"n": [len(os.listdir(ctx.source))]})

def sometimes(data, ctx):
    if ctx.chunk == 1:
        os._exit(1)
    if ctx.chunk == 2:
        raise RuntimeError("no")
    return data

def fork_and_die(data, ctx):
    if os.fork() == 0:  # the grandchild keeps the pipes open, in a session of its own
        os.setsid()
        time.sleep(3)
        os._exit(0)
    os._exit(1)

def scribble(data, ctx):
    import json, sys
    os.write(json.loads(sys.argv[1])["out_fd"], b"\\xff\\xff\\xff\\x7fnot a frame")
    time.sleep(0.2)
    return data

def chatty(data, ctx):
    print("hello from the app")
    os.write(1, b"raw bytes on fd 1")
    return data

not_a_function = 3
'''
DATA = pa.table({"x": [1, 2, 3], "s": ["a", None, "c"]})
CTX = AppContext(tenant="acme", app="a", source="f.csv", tables=("a",))


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    d = tmp_path / "apps" / "acme"
    (d / "pkg").mkdir(parents=True)
    (d / "w.py").write_text(APP)
    (d / "pkg" / "__init__.py").write_text("")
    (d / "pkg" / "inner.py").write_text("def run(data, ctx):\n    return data.slice(1)\n")
    (d / "broken.py").write_text("def run(data, ctx)\n    return data\n")
    (d / "uses_missing.py").write_text("import not_installed_anywhere\n")
    other = tmp_path / "apps" / "other"
    other.mkdir()
    (other / "secret_of_other.py").write_text("SECRET = 1\n")
    (d / "leak.py").symlink_to(other / "secret_of_other.py")
    return d


def spec(entry: str, tables: tuple[str, ...] = ("a",), **kw: object) -> AppSpec:
    kw.setdefault("timeout_secs", 10)
    return AppSpec(name="a", entrypoint=entry, tables=list(tables), **kw)  # type: ignore[arg-type]


def run(app_dir: Path, fn: str, tables: tuple[str, ...] = ("a",), data: pa.Table = DATA,
        ctx: AppContext = CTX, **kw: object) -> dict[str, pa.Table]:
    entry = fn if ":" in fn else f"w:{fn}"
    with AppRunner(app_dir, spec(entry, tables, **kw), "acme") as r:
        return r.call(data, ctx)


def test_identity_round_trip_keeps_schema_and_values(app_dir: Path) -> None:
    data = pa.table({
        "i": pa.array([1, None, 3], pa.int64()), "f": [0.5, 1.5, None],
        "s": ["x", "ÿ", None], "b": [True, False, None],
        "t": pa.array([0, 1, 2], pa.timestamp("us", tz="UTC")),
        "d": pa.array([1, 2, 3], pa.decimal128(10, 2)),
        "l": pa.array([[1], [], None], pa.list_(pa.int32())),
    }).replace_schema_metadata({"origin": "test"})
    out = run(app_dir, "identity", data=data)
    assert list(out) == ["a"]
    assert out["a"].schema.equals(data.schema, check_metadata=True)
    assert out["a"].equals(data)
    batch = data.to_batches()[0]
    assert run(app_dir, "identity", data=batch)["a"].equals(data)


def test_rename_and_derive(app_dir: Path) -> None:
    out = run(app_dir, "derive")["a"]
    assert out.column_names == ["n", "double"]
    assert out.column("double").to_pylist() == [2, 4, 6]


def test_multi_table_dict(app_dir: Path) -> None:
    out = run(app_dir, "split", tables=("a", "b"))
    assert out["a"].equals(DATA) and out["b"].num_rows == 1
    assert list(run(app_dir, "only_b", tables=("a", "b"))) == ["b"]


def test_dotted_module_in_a_package(app_dir: Path) -> None:
    assert run(app_dir, "pkg.inner:run")["a"].num_rows == 2


@pytest.mark.parametrize(("fn", "kind", "words", "kw"), [
    ("boom", "raised", "raised ValueError: bad chunk 0 (at w.py:", {}),
    ("boom", "raised", 'in boom: raise ValueError("bad chunk %d" % ctx.chunk)', {}),
    ("hang", "timeout", "took longer than 1 s", {"timeout_secs": 1}),
    ("hog", "memory", "memory limit exceeded (256 MB)", {"memory_mb": 256}),
    ("die", "crashed", "crashed (exit code 3)", {}),
    ("abort", "crashed", "crashed (killed by SIGABRT at w.py:", {}),
    ("fork_and_die", "crashed", "crashed (exit code 1)", {}),
    ("scribble", "bad_output", "broke the protocol", {}),
    ("nothing", "bad_output", "returned None, not a pyarrow Table", {}),
    ("a_list", "bad_output", "returned list, not a pyarrow Table", {}),
    ("stranger", "bad_output", "unknown tables ['zzz']", {}),
    ("missing", "load", "module 'w' has no function 'missing'", {}),
    ("nope:run", "load", "module 'nope' is not in the app folder", {}),
    ("broken:run", "load", "syntax error in broken.py line 1", {}),
    ("uses_missing:run", "load", "No module named 'not_installed_anywhere'", {}),
    ("not_a_function", "load", "is a int, not a function", {}),
    ("json:loads", "load", "module 'json' is not in the app folder", {}),
])
def test_failures_name_tenant_app_source_and_reason(
        app_dir: Path, fn: str, kind: str, words: str, kw: dict[str, object]) -> None:
    t0 = time.monotonic()
    with pytest.raises(AppFailed) as e:
        run(app_dir, fn, **kw)
    assert e.value.kind == kind, str(e.value)
    assert words in str(e.value)
    assert str(e.value).startswith("tenant 'acme': app 'a' on 'f.csv' (chunk 0): ")
    assert time.monotonic() - t0 < (2.5 if kind == "timeout" else 8)


def test_app_that_hangs_while_loading_times_out(app_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from simbdp.apps import runner

    monkeypatch.setattr(runner, "_STARTUP_SECS", 0.5)
    (app_dir / "slow.py").write_text("import time\ntime.sleep(30)\n")
    t0 = time.monotonic()
    with pytest.raises(AppFailed) as e:
        run(app_dir, "slow:f", timeout_secs=1)
    assert e.value.kind == "timeout" and "loading the app took longer than 1.5 s" in str(e.value)
    assert time.monotonic() - t0 < 3


def test_tiny_memory_limit_fails_as_memory_while_loading(app_dir: Path) -> None:
    with pytest.raises(AppFailed) as e:
        run(app_dir, "identity", memory_mb=64)
    assert e.value.kind == "memory" and "while loading" in str(e.value)


def test_cannot_import_another_tenants_module(app_dir: Path) -> None:
    with pytest.raises(AppFailed) as e:
        run(app_dir, "steal")
    assert e.value.kind == "raised"
    assert "No module named 'secret_of_other'" in str(e.value)
    # a symlink out of the tenant's folder is not followed into its private copy
    with pytest.raises(AppFailed, match="module 'leak' is not in the app folder"):
        run(app_dir, "leak:SECRET")


def test_environment_is_scrubbed(app_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIMBDP_SECRET", "hunter2")
    monkeypatch.setenv("PYTHONPATH", str(app_dir.parent / "other"))
    keys = run(app_dir, "env")["a"].column("k").to_pylist()
    assert "SIMBDP_SECRET" not in keys and "PYTHONPATH" not in keys
    assert set(keys) <= {"PATH", "LANG", "HOME", "TMPDIR", "OMP_NUM_THREADS", "LC_CTYPE",
                         "OPENBLAS_NUM_THREADS", "ARROW_DEFAULT_MEMORY_POOL", "MALLOC_ARENA_MAX",
                         "PWD"}


def test_runner_continues_after_failures(app_dir: Path) -> None:
    with AppRunner(app_dir, spec("w:sometimes"), "acme") as r:
        pid = r._proc.pid if r._proc else None
        assert r.call(DATA, CTX)["a"].equals(DATA)
        with pytest.raises(AppFailed) as e:
            r.call(DATA, AppContext("acme", "a", "f.csv", ("a",), chunk=1))
        assert e.value.kind == "crashed" and "(chunk 1)" in str(e.value)
        assert r.call(DATA, CTX)["a"].equals(DATA)  # a fresh process
        assert r._proc is not None and r._proc.pid != pid
        with pytest.raises(AppFailed, match="raised RuntimeError: no"):
            r.call(DATA, AppContext("acme", "a", "f.csv", ("a",), chunk=2))
        assert r.call(DATA, CTX)["a"].equals(DATA)


def test_runner_restarts_after_a_timeout(app_dir: Path) -> None:
    with AppRunner(app_dir, spec("w:hang", timeout_secs=1), "acme") as r:
        for _ in range(2):
            with pytest.raises(AppFailed) as e:
                r.call(DATA, CTX)
            assert e.value.kind == "timeout"


def test_load_failure_is_remembered_without_new_processes(app_dir: Path) -> None:
    with AppRunner(app_dir, spec("w:missing"), "acme") as r:
        for _ in range(3):
            with pytest.raises(AppFailed, match="has no function"):
                r.call(DATA, CTX)
        assert r._proc is None


def test_prints_do_not_corrupt_the_protocol(app_dir: Path) -> None:
    with AppRunner(app_dir, spec("w:chatty"), "acme") as r:
        for _ in range(3):
            assert r.call(DATA, CTX)["a"].equals(DATA)


def test_one_process_serves_many_calls_and_close_ends_it(app_dir: Path) -> None:
    r = AppRunner(app_dir, spec("w:identity"), "acme")
    r.start()
    assert r._proc is not None
    pid, folder = r._proc.pid, r._dir
    for i in range(20):
        r.call(DATA.slice(i % 3), CTX)
    assert r._proc.pid == pid
    r.close()
    assert folder is not None and not folder.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_app_without_entrypoint_is_a_config_error(app_dir: Path) -> None:
    with pytest.raises(ConfigError):
        AppRunner(app_dir, AppSpec(name="a", tables=["a"]), "acme")


def _wide_table(n: int) -> pa.Table:
    """~150 bytes a row over 7 columns, built without Python loops."""
    ids = pa.array(range(n), pa.int64())
    join = pc.binary_join_element_wise
    text = join("user-", pc.cast(ids, pa.string()),
                "-a-free-text-comment-lorem-ipsum-dolor-sit", "")
    url = join("https://www.example.org/r/subreddit_",
               pc.cast(pc.bit_wise_and(ids, 997), pa.string()), "/comments", "")
    return pa.table({
        "id": ids, "ts": pc.cast(ids, pa.timestamp("us")),
        "a": pc.divide(pc.cast(ids, pa.float64()), 7.0), "b": pc.sqrt(ids),
        "k": pc.bit_wise_and(ids, 1023), "s": text, "t": url,
    })


@pytest.mark.slow
def test_large_chunks_round_trip_fast(app_dir: Path) -> None:
    data = _wide_table(1_000_000)
    assert data.nbytes > 140 * 1024**2
    rows = 131_072
    with AppRunner(app_dir, spec("w:identity", memory_mb=2048), "acme") as r:
        r.call(data.slice(0, 1), CTX)  # the process is up and the app loaded
        t0 = time.perf_counter()
        out = [r.call(data.slice(i, rows), CTX)["a"] for i in range(0, data.num_rows, rows)]
        elapsed = time.perf_counter() - t0
    assert pa.concat_tables(out).equals(data)
    assert elapsed < 3.0  # ~0.25 s warm, ~0.6 s cold on a 2-core VM: this catches blowups
