"""The process that runs one tenant app: ``python -I -m simbdp.apps.child '<json config>'``.

It lowers its own resource limits first (before pyarrow or tenant code is imported), loads the
app from its private copy of the tenant's app folder, says ``ready`` (or why it cannot load),
then answers one frame per call until the platform closes the input pipe. Its stdout and
stderr go to a log file, so prints cannot corrupt the protocol. Never imported by the platform.
"""

from __future__ import annotations

import errno
import faulthandler
import importlib
import json
import os
import resource
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

_MESSAGE_CHARS = 1000


def _lower(which: int, soft: int, hard: int | None = None) -> None:
    """Set a limit, never above the hard limit the process already has."""
    hard = soft if hard is None else hard
    _, cur_hard = resource.getrlimit(which)
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    resource.setrlimit(which, (min(soft, hard), hard))


def _apply_limits(limits: dict[str, Any]) -> None:
    _lower(resource.RLIMIT_AS, limits["memory_mb"] * 1024**2)
    _lower(resource.RLIMIT_CPU, limits["cpu_secs"], limits["cpu_secs"] + 5)
    _lower(resource.RLIMIT_FSIZE, limits["fsize_bytes"])
    _lower(resource.RLIMIT_CORE, 0)


def _orphaned(cfg: dict[str, Any]) -> bool:
    """Whether the platform process died (SIGKILL, OOM): nobody else removes our folder."""
    if os.getppid() == cfg["parent_pid"]:
        return False
    shutil.rmtree(cfg["private_dir"], ignore_errors=True)
    return True


def _watch_parent(cfg: dict[str, Any]) -> None:
    """Exit when the platform is gone, even while the app hangs (a sleeping orphan).

    Only unconfined: a confined app's namespace dies with the platform process (bwrap).
    """
    if cfg["parent_pid"] is None:
        return

    def watch() -> None:
        while not _orphaned(cfg):
            time.sleep(1.0)
        os._exit(70)

    threading.stack_size(256 * 1024)  # thread stacks count against RLIMIT_AS
    threading.Thread(target=watch, name="simbdp-parent-watch", daemon=True).start()
    threading.stack_size(0)


def _where(e: BaseException, app_dir: str) -> str:
    """The last traceback line in the app's own files: ``w.py:12 in wrangle: <source>``."""
    frames = [f for f in traceback.extract_tb(e.__traceback__)
              if os.path.realpath(f.filename).startswith(app_dir + os.sep)]
    if not frames:
        return ""
    f = frames[-1]
    source = (f.line or "").strip()[:200]
    return f" (at {_rel(f.filename, app_dir)}:{f.lineno} in {f.name}: {source})"


def _rel(path: str, app_dir: str) -> str:
    real = os.path.realpath(path)
    return os.path.relpath(real, app_dir) if real.startswith(app_dir + os.sep) else \
        os.path.basename(path)


def describe(e: BaseException, app_dir: str) -> str:
    """``Type: message (at file:line in function: source)``, bounded in size."""
    try:
        text = str(e)
    except Exception:  # an exception whose __str__ fails
        text = "<unprintable>"
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "..."
    head = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return head + _where(e, app_dir)


def is_memory(e: BaseException) -> bool:
    """Whether ``e`` says the memory limit was hit (a shared library not mapped, ENOMEM)."""
    if isinstance(e, MemoryError) or (isinstance(e, OSError) and e.errno == errno.ENOMEM):
        return True
    text = str(e).lower()
    return "failed to map segment" in text or "cannot allocate memory" in text


def load(app_dir: str, entrypoint: str) -> Callable[..., Any] | tuple[str, str]:
    """The app function, or ``(kind, sentence)`` saying why it cannot be loaded."""
    found = _load(app_dir, entrypoint)
    if isinstance(found, BaseException):
        kind = "memory" if is_memory(found) else "load"
        return kind, f"importing {entrypoint.split(':')[0]!r} failed: {describe(found, app_dir)}"
    if isinstance(found, str):
        return "load", found
    return found


def _load(app_dir: str, entrypoint: str) -> Callable[..., Any] | str | BaseException:
    module_name, func_name = entrypoint.split(":")
    sys.path.insert(0, app_dir)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and (module_name + ".").startswith(e.name + "."):
            return f"module {module_name!r} is not in the app folder"
        return e
    except SyntaxError as e:
        return f"syntax error in {_rel(e.filename or '?', app_dir)} line {e.lineno}: {e.msg}"
    except BaseException as e:
        return e
    file = os.path.realpath(getattr(module, "__file__", None) or "/")
    if not file.startswith(app_dir + os.sep):
        return (f"module {module_name!r} is not in the app folder (a module of the platform "
                "has that name: rename the app's module)")
    func = getattr(module, func_name, None)
    if func is None:
        return f"module {module_name!r} has no function {func_name!r}"
    if not callable(func):
        return f"{entrypoint} is a {type(func).__name__}, not a function"
    return func


def _what(x: object) -> str:
    return "None" if x is None else type(x).__name__


def normalize(out: object, tables: list[str]) -> dict[str, Any] | str:
    """The app's result as ``{table: pa.Table}``, or a sentence saying what was wrong."""
    import pyarrow as pa

    if isinstance(out, pa.RecordBatch | pa.Table):
        out = {tables[0]: out}
    if not isinstance(out, dict):
        return (f"returned {_what(out)}, not a pyarrow Table, RecordBatch or dict of them "
                f"(its tables: {tables})")
    unknown = [k for k in out if k not in tables]
    if unknown:
        return f"returned rows for unknown tables {unknown} (its tables: {tables})"
    result = {}
    for name, rows in out.items():
        if isinstance(rows, pa.RecordBatch):
            rows = pa.Table.from_batches([rows])
        if not isinstance(rows, pa.Table):
            return f"returned {_what(rows)} for table {name!r}, not a pyarrow Table"
        result[name] = rows
    return result


def _serve(func: Callable[..., Any], cfg: dict[str, Any]) -> None:
    from simbdp.apps.base import AppContext
    from simbdp.apps.protocol import ipc_size, recv, send

    app_dir, tables, in_fd, out_fd = cfg["app_dir"], cfg["tables"], cfg["in_fd"], cfg["out_fd"]

    def error(kind: str, message: str) -> None:
        send(out_fd, {"status": "error", "kind": kind, "message": message}, [])

    while True:
        header, data = recv(in_fd)  # EOFError: the platform went away without a goodbye
        if header.get("op") == "bye":
            return
        c = header["ctx"]
        ctx = AppContext(**{**c, "tables": tuple(c["tables"])})
        try:
            out = func(data[0], ctx)
        except BaseException as e:  # SystemExit and KeyboardInterrupt are the app's too
            del data
            error("memory" if is_memory(e) else "raised", describe(e, app_dir))
            continue
        del data
        result = normalize(out, tables)
        del out
        if isinstance(result, str):
            error("bad_output", result)
            continue
        try:
            sizes = [ipc_size(t) for t in result.values()]
        except Exception as e:
            error("bad_output", f"returned rows that cannot be sent as Arrow IPC: {e}")
            continue
        usage = resource.getrusage(resource.RUSAGE_SELF)
        send(out_fd, {"status": "ok", "tables": list(result),
                      "cpu_secs": usage.ru_utime + usage.ru_stime},
             list(result.values()), sizes=sizes)


def main() -> None:
    cfg = json.loads(sys.argv[1])
    cfg["app_dir"] = os.path.realpath(cfg["app_dir"])
    _apply_limits(cfg["limits"])
    faulthandler.enable()  # a native crash leaves the Python stack in the log: the app's line
    _watch_parent(cfg)
    from simbdp.apps.protocol import send  # pyarrow loads here, under the limits

    try:
        func = load(cfg["app_dir"], cfg["entrypoint"])
        if isinstance(func, tuple):
            send(cfg["out_fd"], {"status": "error", "kind": func[0], "message": func[1]}, [])
            return
        send(cfg["out_fd"], {"status": "ready"}, [])
        _serve(func, cfg)
    except EOFError:  # no goodbye: the platform died, or gave up on this process
        end = time.monotonic() + 1.0  # its pipes close before we are handed to a new parent
        while os.getppid() == cfg["parent_pid"] and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        if cfg["parent_pid"] is not None:
            _orphaned(cfg)


if __name__ == "__main__":
    main()
