"""The child process that runs one tenant app: ``python -I -m simbdp.apps.child``.

Reads frames from stdin (a JSON header, then an Arrow IPC stream), calls the app, writes
frames to stdout. Never imported by the platform itself.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback

import pyarrow as pa

from simbdp.apps.base import AppContext
from simbdp.apps.protocol import read_header, read_table, write_header, write_table


def _normalize(out: object, tables: list[str]) -> dict[str, pa.Table] | str:
    """The app's result as {table: Table}, or a description of what was wrong."""
    if isinstance(out, pa.RecordBatch):
        out = pa.Table.from_batches([out])
    if isinstance(out, pa.Table):
        return {tables[0]: out}
    if isinstance(out, dict):
        unknown = [k for k in out if k not in tables]
        if unknown:
            return f"returned rows for unknown tables {unknown} (its tables: {tables})"
        result = {}
        for k, v in out.items():
            if isinstance(v, pa.RecordBatch):
                v = pa.Table.from_batches([v])
            if not isinstance(v, pa.Table):
                return f"returned {type(v).__name__} for table {k!r}, not Arrow data"
            result[k] = v
        return result
    return f"returned {type(out).__name__}, not a pyarrow Table or a dict of tables"


def main() -> None:
    app_dir, entrypoint, tables = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # the app's prints must not corrupt the protocol
    sys.path.insert(0, app_dir)
    module_name, func_name = entrypoint.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except Exception as e:  # a broken app: answer every call with what is missing
        message = f"cannot load {entrypoint}: {type(e).__name__}: {e}"
        while read_header(inp) is not None:
            read_table(inp)
            write_header(out, {"status": "error", "kind": "load", "message": message})
            out.flush()
        return
    while (header := read_header(inp)) is not None:
        data = read_table(inp)
        ctx = AppContext(**{**header, "tables": tuple(header["tables"])})
        try:
            result = _normalize(func(data, ctx), tables)
        except MemoryError:
            write_header(out, {"status": "error", "kind": "memory",
                               "message": "MemoryError inside the app"})
            out.flush()
            continue
        except Exception as e:
            tb = traceback.extract_tb(e.__traceback__)
            where = next((f"{fr.filename.rsplit('/', 1)[-1]}:{fr.lineno}" for fr in reversed(tb)
                          if fr.filename.startswith(app_dir)), "?")
            write_header(out, {"status": "error", "kind": "raised",
                               "message": f"{type(e).__name__}: {e} (at {where})"})
            out.flush()
            continue
        if isinstance(result, str):
            write_header(out, {"status": "error", "kind": "bad_output", "message": result})
        else:
            write_header(out, {"status": "ok", "tables": list(result)})
            for t in result.values():
                write_table(out, t)
        out.flush()


if __name__ == "__main__":
    main()
