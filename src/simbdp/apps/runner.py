"""Run a tenant app outside the platform's process, with time and memory limits.

Isolation provided: the app runs in a fresh interpreter (``python -I``) with an empty
environment but PATH/LANG/HOME, in a private temporary folder holding a copy of the tenant's
own app folder (the only folder on its ``sys.path``), with ``RLIMIT_AS`` (memory), no core
files and a bounded file size. When the platform runs as root, the child also drops to the
unprivileged ``nobody`` user, so it cannot read the platform home (keep it mode 0700) nor
other tenants' code and data; that needs a Python interpreter that ``nobody`` can run (not
one under root's 0700 home, as with pyenv in /root: then the drop is skipped).
Not provided: network isolation, CPU shares (use cgroups or
containers per tenant for those).
"""

from __future__ import annotations

import json
import os
import pwd
import resource
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from simbdp.apps.base import AppContext
from simbdp.apps.protocol import read_header, read_table, write_header, write_table
from simbdp.errors import AppFailed
from simbdp.profiles.models import AppSpec

__all__ = ["AppRunner"]

_FILE_LIMIT = 1024**3


def _world_reachable(path: Path) -> bool:
    """Whether an unprivileged user can reach and run ``path`` (every parent o+x)."""
    path = path.resolve()
    return all(p.stat().st_mode & 0o001 for p in path.parents) and bool(
        path.stat().st_mode & 0o005)


def _unprivileged() -> tuple[int, int] | None:
    """(uid, gid) of ``nobody`` when running as root and the interpreter is usable by it."""
    if os.geteuid() != 0 or not _world_reachable(Path(sys.executable)):
        return None
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


class AppRunner:
    """One child process running one tenant app; reused for every chunk or micro-batch."""

    def __init__(self, app_dir: Path, spec: AppSpec, tenant: str):
        if spec.entrypoint is None:
            raise ValueError(f"app {spec.name!r} has no entrypoint")
        self.app_dir, self.spec, self.tenant = app_dir, spec, tenant
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: Path | None = None
        self._stderr: Path | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="app-call")
        self._ids = _unprivileged()

    # lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> AppRunner:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"simbdp-app-{self.tenant}-"))
        app_copy = self._tmp / "app"
        if self.app_dir.is_dir():
            shutil.copytree(self.app_dir, app_copy, symlinks=False)
        else:
            app_copy.mkdir()
        self._stderr = self._tmp / "stderr.txt"
        if self._ids:
            for p in [self._tmp, *self._tmp.rglob("*")]:
                os.chown(p, *self._ids)
        mem = self.spec.memory_mb * 1024 * 1024
        ids = self._ids

        def limits() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            resource.setrlimit(resource.RLIMIT_FSIZE, (_FILE_LIMIT, _FILE_LIMIT))
            if ids:
                os.setgroups([])
                os.setgid(ids[1])
                os.setuid(ids[0])

        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
               "HOME": str(self._tmp), "OMP_NUM_THREADS": "1"}
        with self._stderr.open("wb") as err:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "simbdp.apps.child", str(app_copy),
                 self.spec.entrypoint or "", json.dumps(self.spec.tables)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                cwd=self._tmp, preexec_fn=limits, close_fds=True)

    def close(self) -> None:
        self._stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for f in (proc.stdin, proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # calls -------------------------------------------------------------------------------
    def call(self, data: pa.Table | pa.RecordBatch, ctx: AppContext) -> dict[str, pa.Table]:
        """Run the app on ``data``; return rows per target table. Raises AppFailed."""
        if self._proc is None or self._proc.poll() is not None:
            self._restart()
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        future = self._pool.submit(self._exchange, table, ctx)
        try:
            return future.result(timeout=self.spec.timeout_secs)
        except FutureTimeout:
            self._kill()
            future.exception()  # wait for the exchange to notice the dead child
            raise AppFailed(self._msg(ctx, f"exceeded its time limit of "
                                           f"{self.spec.timeout_secs:g} s"), "timeout") from None
        except (BrokenPipeError, EOFError, OSError, pa.ArrowInvalid) as e:
            raise self._died(ctx) from e

    def _restart(self) -> None:
        if self._tmp is not None:
            self._stop()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        self.start()

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def _exchange(self, table: pa.Table, ctx: AppContext) -> dict[str, pa.Table]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        header = {"tenant": ctx.tenant, "app": ctx.app, "source": ctx.source,
                  "tables": list(ctx.tables), "chunk": ctx.chunk}
        write_header(proc.stdin, header)
        write_table(proc.stdin, table)
        proc.stdin.flush()
        reply = read_header(proc.stdout)
        if reply is None:
            raise EOFError("the app process closed its output")
        if reply["status"] != "ok":
            message = reply["message"]
            if reply["kind"] == "memory":
                message = f"exceeded its memory limit of {self.spec.memory_mb} MB ({message})"
            raise AppFailed(self._msg(ctx, message), reply["kind"])
        return {name: read_table(proc.stdout) for name in reply["tables"]}

    def _died(self, ctx: AppContext) -> AppFailed:
        proc = self._proc
        code = proc.wait() if proc is not None else None
        self._proc = None
        err = self._stderr.read_text(errors="replace")[-2000:] if self._stderr and \
            self._stderr.exists() else ""
        memoryish = any(w in err for w in ("MemoryError", "cannot allocate", "bad_alloc",
                                           "out of memory", "Cannot allocate"))
        if memoryish:
            return AppFailed(self._msg(ctx, f"exceeded its memory limit of "
                                            f"{self.spec.memory_mb} MB"), "memory")
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        last = err.strip().splitlines()[-1] if err.strip() else ""
        return AppFailed(self._msg(ctx, f"crashed ({how}) {last}".strip()), "crashed")

    def _msg(self, ctx: AppContext, what: str) -> str:
        return f"tenant {self.tenant!r}: app {self.spec.name!r} on {ctx.source!r}: {what}"
