"""Run a tenant app in a process of its own, confined, with time and memory limits.

One :class:`AppRunner` owns one child process (``python -I -m simbdp.apps.child``, a fresh
interpreter, never a fork of the platform, started inside bubblewrap and a cgroup of its own)
and reuses it for every chunk of a file or every micro-batch of a stream instance. Data
crosses two pipes as Arrow IPC streams (see :mod:`simbdp.apps.protocol`); what walls the
child in is described in :mod:`simbdp.apps.sandbox`.

Failures raise :class:`~simbdp.errors.AppFailed` with ``kind`` one of ``load``, ``raised``,
``timeout``, ``memory``, ``crashed`` or ``bad_output``, naming tenant, app, source and chunk.
The runner stays usable: after a timeout, a crash, a memory failure or a broken protocol the
child is killed and the next :meth:`AppRunner.call` starts a fresh one, transparently. A
``load`` failure is remembered: every call raises it again without starting a process, until
:meth:`AppRunner.close` and :meth:`AppRunner.start` pick up new code.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from simbdp.apps import protocol
from simbdp.apps.base import AppContext
from simbdp.apps.cgroup import AppCgroup, cgroup_problem
from simbdp.apps.sandbox import (
    APP_DIR,
    Limits,
    bwrap_command,
    child_env,
    make_private_dir,
    sandbox_problem,
)
from simbdp.errors import AppFailed, ConfigError, TransientError
from simbdp.profiles.models import AppSpec
from simbdp.profiles.platform import AppsSettings

__all__ = ["AppRunner"]

#: the first call also waits for the interpreter, pyarrow and the app's module to load
_STARTUP_SECS = 10.0
#: a reply may hold more bytes than the child's memory (one buffer in several columns)
_REPLY_FACTOR = 4
_PIPE_BYTES = 1024**2  # fewer, larger pipe writes: ~3x faster on 100 MB chunks
_LOG_KEEP_BYTES = 1024**2
_MEMORY_WORDS = ("memoryerror", "cannot allocate", "bad_alloc", "out of memory",
                 "memory allocation", "failed to allocate", "failed to map")
_NEAR_LIMIT = 0.9
_VM_PEAK = re.compile(rb"VmPeak:\s*(\d+) kB")
_FRAME = re.compile(r'File "([^"]+)", line (\d+) in (\S+)')
_SIGNALS = {int(s) for s in signal.Signals}


class AppRunner:
    """One child process running one tenant app; reused for every chunk or micro-batch.

    Not thread-safe: one call at a time. Use as a context manager, or ``start()``/``close()``.
    """

    def __init__(self, app_dir: Path, spec: AppSpec, tenant: str,
                 settings: AppsSettings | None = None):
        if spec.entrypoint is None:
            raise ConfigError(f"tenant {tenant!r}: app {spec.name!r} has no entrypoint")
        self.app_dir, self.spec, self.tenant = Path(app_dir), spec, tenant
        self.settings = settings or AppsSettings()
        problem = sandbox_problem()
        if problem is not None and not self.settings.unconfined:
            raise ConfigError(f"tenant {tenant!r}: app {spec.name!r} cannot run confined: "
                              f"{problem}; install bubblewrap, or set apps.unconfined: true "
                              "in platform.yaml to run tenant apps without walls")
        #: False when the app runs as a plain process of the platform's user
        self.confined = problem is None
        self._limits = Limits.for_app(spec.memory_mb, spec.timeout_secs)
        self._proc: subprocess.Popen[bytes] | None = None
        self._app_pid = 0
        self._cgroup: AppCgroup | None = None
        self._dir: Path | None = None
        self._to_child = self._from_child = self._log = -1
        self._log_mark = 0
        self._ready = False
        self._load_error: tuple[str, str] | None = None  # (kind, message), until close()
        self._peer = protocol.Peer()
        self._vm_peak_kib = 0

    # lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> AppRunner:
        self.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start the child process (it loads the app meanwhile); no-op if it runs already.

        Raises TransientError when the process cannot be started (no fork, no temp space).
        """
        if self._proc is not None:
            return
        self._discard()
        self._load_error, self._ready = None, False
        try:
            self._spawn()
        except OSError as e:
            self._discard()
            raise TransientError(f"tenant {self.tenant!r}: app {self.spec.name!r}: cannot "
                                 f"start its process: {e}") from e

    def _spawn(self) -> None:
        self._dir = make_private_dir(self.tenant, self.app_dir)
        self._log = os.open(self._dir / "app.log",
                            os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        for fd in (in_w, out_r):
            with contextlib.suppress(OSError):  # a smaller pipe still works, only slower
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        self._to_child, self._from_child = in_w, out_r
        app_dir = APP_DIR if self.confined else str(self._dir / "app")
        home = "/tmp" if self.confined else str(self._dir)
        cfg = {"app_dir": app_dir, "entrypoint": self.spec.entrypoint,
               "tables": list(self.spec.tables), "limits": self._limits.to_json(),
               "in_fd": in_r, "out_fd": out_w,
               # confined, the namespace dies with the platform: nothing to watch or remove
               "parent_pid": None if self.confined else os.getpid(),
               "private_dir": None if self.confined else str(self._dir)}
        argv = [sys.executable, "-I", "-m", "simbdp.apps.child", json.dumps(cfg)]
        if self.confined:
            argv = bwrap_command(self._dir, self.settings.tmp_mb) + argv
        if cgroup_problem() is None:
            self._cgroup = AppCgroup(self.spec.memory_mb * 1024**2, self.settings.pids_max)
            argv = _enter_cgroup(self._cgroup.procs_files) + argv
        try:
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                pass_fds=(in_r, out_w), env=child_env(home), cwd=self._dir,
                start_new_session=True, umask=0o077)
        finally:
            os.close(in_r)
            os.close(out_w)
        os.set_blocking(self._to_child, False)
        os.set_blocking(self._from_child, False)
        self._vm_peak_kib, self._app_pid = 0, 0 if self.confined else self._proc.pid
        pidfd = -1
        with contextlib.suppress(OSError, AttributeError):  # Linux >= 5.3
            pidfd = os.pidfd_open(self._proc.pid)
        self._peer = protocol.Peer(pidfd, self._sample)

    def close(self) -> None:
        """Kill the child and remove its folder: calls are synchronous, so it has nothing to
        finish, and a kill ends it in ~1 ms where its interpreter's own exit takes ~20 ms."""
        self._discard()
        self._load_error = None

    # calls -------------------------------------------------------------------------------
    def call(self, data: pa.Table | pa.RecordBatch, ctx: AppContext) -> dict[str, pa.Table]:
        """Run the app on ``data``; return its rows per target table.

        A single-table app's result comes back as ``{spec.tables[0]: table}``; a multi-table
        app's dict may leave tables out. Raises AppFailed (see the module docstring).
        """
        if self._load_error is not None:
            raise AppFailed(self._msg(ctx, self._load_error[1]), self._load_error[0])
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        sizes = [protocol.ipc_size(table)]  # outside the try: a failure here is not the app's
        if self._proc is None or self._exited():
            self._discard()
            self.start()
        self._mark_log()
        limit = self.spec.timeout_secs
        try:
            if not self._ready:
                limit += _STARTUP_SECS
                self._await_ready(ctx, time.monotonic() + limit)
                limit = self.spec.timeout_secs
            deadline = time.monotonic() + limit
            protocol.send(self._to_child, {"ctx": _ctx_json(ctx)}, [table], deadline,
                          self._peer, sizes)
            header, tables = protocol.recv(self._from_child, deadline, self._peer,
                                           _REPLY_FACTOR * self.spec.memory_mb * 1024**2)
        except TimeoutError:
            what = "the call" if self._ready else "loading the app"
            self._discard()
            raise AppFailed(self._msg(ctx, f"timed out: {what} took longer than {limit:g} s"),
                            "timeout") from None
        except EOFError:
            raise self._died(ctx) from None
        except ValueError as e:
            self._discard()
            raise AppFailed(self._msg(ctx, f"broke the protocol: {e}"), "bad_output") from None
        except BaseException:  # e.g. KeyboardInterrupt mid-frame: the pipes are out of step
            self._discard()
            raise
        return self._result(header, tables, ctx)

    def _await_ready(self, ctx: AppContext, deadline: float) -> None:
        header, _ = protocol.recv(self._from_child, deadline, self._peer, 0)
        if header.get("status") == "ready":
            self._ready = True
            return
        kind, message = header.get("kind"), str(header.get("message"))[:4000]
        if kind not in ("load", "memory"):
            raise ValueError(f"a first frame {str(header)[:300]} instead of ready")
        if kind == "memory":
            message = f"memory limit exceeded ({self.spec.memory_mb} MB) while loading: {message}"
        # the same code fails the same way: remember it, start no process per call
        self._load_error = (kind, f"cannot load {self.spec.entrypoint}: {message}")
        self._discard(graceful=True)
        raise AppFailed(self._msg(ctx, self._load_error[1]), kind)

    def _result(self, header: dict[str, object], tables: list[pa.Table],
                ctx: AppContext) -> dict[str, pa.Table]:
        status = header.get("status")
        if status == "error":
            kind, message = str(header.get("kind")), str(header.get("message"))[:4000]
            if kind == "memory":  # the process survived, but may be fragmented: start afresh
                self._discard()
                message = f"memory limit exceeded ({self.spec.memory_mb} MB): {message}"
            elif kind not in ("raised", "bad_output"):
                kind = "bad_output"
            raise AppFailed(self._msg(ctx, message if kind != "raised" else
                                      f"raised {message}"), kind)
        names = header.get("tables")
        if status != "ok" or not isinstance(names, list) or len(names) != len(tables) \
                or len(set(names)) != len(names) \
                or any(n not in self.spec.tables for n in names):
            self._discard()
            raise AppFailed(self._msg(ctx, f"broke the protocol: a reply {str(header)[:300]}"),
                            "bad_output")
        for name, t in zip(names, tables, strict=True):
            try:
                t.validate(full=True)  # the platform must not trust buffers from tenant code
            except pa.ArrowException as e:
                raise AppFailed(self._msg(ctx, f"returned invalid Arrow data for table "
                                               f"{name!r}: {e}"), "bad_output") from None
        cpu = header.get("cpu_secs")
        if isinstance(cpu, int | float) and cpu > self._limits.cpu_secs / 2:
            self._discard(graceful=True)  # recycle before RLIMIT_CPU could hit a call
        return dict(zip(names, tables, strict=True))

    # the child process ---------------------------------------------------------------------
    def _exited(self) -> bool:
        """Whether the child ended between calls (not reaped yet: ``_discard`` does that)."""
        if self._proc is None:
            return True
        try:
            return os.waitid(os.P_PID, self._proc.pid,
                             os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None
        except ChildProcessError:  # reaped by someone else (SIGCHLD ignored by the platform)
            return True

    def _wait_exit(self, wait_secs: float) -> bool:
        end = time.monotonic() + wait_secs
        while not self._exited():
            if time.monotonic() >= end:
                return False
            time.sleep(0.005)
        return True

    def _kill_group(self) -> None:
        # only while the leader is not reaped: until then its id cannot name another group
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)

    def _end(self, graceful: bool, wait_secs: float = 1.0) -> tuple[int, int] | None:
        """End the child and its process group; (exit code or -signal, peak RSS in KiB).

        Graceful: close its input and give it ``wait_secs`` to leave, then kill it.
        """
        proc, ended = self._proc, None
        if self._to_child >= 0:
            if graceful and proc is not None:  # else it takes EOF for the platform's death
                with contextlib.suppress(TimeoutError, EOFError, OSError):
                    protocol.send(self._to_child, {"op": "bye"}, [],
                                  time.monotonic() + 0.1, self._peer)
            os.close(self._to_child)
            self._to_child = -1
        if proc is not None:
            if not (graceful and self._wait_exit(wait_secs)):
                self._kill_group()
                self._wait_exit(5.0)
            self._kill_group()  # the app's own subprocesses, if any
            if self._exited():
                with contextlib.suppress(ChildProcessError):
                    _, status, usage = os.wait4(proc.pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                    if self.confined and code > 128 and code - 128 in _SIGNALS:
                        code = 128 - code  # bwrap exits with 128 + the app's signal
                    proc.returncode = code
                    ended = code, usage.ru_maxrss
        if self._from_child >= 0:
            os.close(self._from_child)
            self._from_child = -1
        if self._peer.pidfd >= 0:
            os.close(self._peer.pidfd)
        self._proc, self._peer = None, protocol.Peer()
        return ended

    def _sample(self) -> None:
        """Track the app's peak address space while a call waits: a native crash near
        the RLIMIT_AS limit is a memory failure, not a bug."""
        if self._proc is None:
            return
        if not self._app_pid:  # confined: bwrap -> bwrap's init -> the app
            self._app_pid = _descendant(self._proc.pid, 2)
        try:
            with open(f"/proc/{self._app_pid}/status", "rb") as f:
                status = f.read()
        except OSError:
            return
        m = _VM_PEAK.search(status)
        if m:
            self._vm_peak_kib = max(self._vm_peak_kib, int(m.group(1)))

    def _discard(self, graceful: bool = False) -> None:
        """End the child and remove its folder; the next call starts a fresh one."""
        self._end(graceful)
        if self._log >= 0:
            os.close(self._log)
            self._log = -1
        if self._cgroup is not None:
            self._cgroup.remove()
            self._cgroup = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
        self._dir, self._ready = None, False

    def _died(self, ctx: AppContext) -> AppFailed:
        """The AppFailed for a child that ended (or closed its pipes): memory, or crashed."""
        loading = not self._ready
        app_dir = APP_DIR if self.confined else os.path.realpath(self._dir / "app") \
            if self._dir else "?"
        exited = self._wait_exit(2.0)
        ended = self._end(graceful=False)
        tail, peak_kib = self._tail(), self._vm_peak_kib
        # with a cgroup the kernel counts its OOM kills: resident memory is known, not guessed
        cgroup = self._cgroup
        oom = cgroup is not None and cgroup.oom_killed()
        self._discard()
        code, rss_kib = ended if ended is not None else (None, 0)
        if not exited:
            how = "closed its pipe but kept running, killed"
        elif code is None:
            how = "ended"
        elif code < 0:
            how = f"killed by {signal.Signals(-code).name}"
        else:
            how = f"exit code {code}"
        site = _crash_site(tail, app_dir)
        lines = tail.strip().splitlines()
        detail = f"{how}{site}" if site else f"{how}: {lines[-1][:300]}" if lines else how
        # a native crash near RLIMIT_AS (address space) is a memory failure; without a cgroup
        # the peak resident size is the only hint of one near the resident limit
        peak = peak_kib if cgroup is not None else max(peak_kib, rss_kib)
        near = peak * 1024 >= _NEAR_LIMIT * self.spec.memory_mb * 1024**2
        native = exited and code is not None and -code in (
            signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS)
        when = "while loading: " if loading else ""
        if oom or any(w in tail.lower() for w in _MEMORY_WORDS) or (near and native):
            hint = "; Python with pyarrow alone needs ~200 MB" if loading else ""
            return AppFailed(self._msg(ctx, f"{when}memory limit exceeded "
                                            f"({self.spec.memory_mb} MB) ({detail}){hint}"),
                             "memory")
        if code is not None and -code == signal.SIGXCPU:
            detail = f"CPU time limit of {self._limits.cpu_secs} s"
        return AppFailed(self._msg(ctx, f"{when}crashed ({detail})"), "crashed")

    # the child's log ------------------------------------------------------------------------
    def _mark_log(self) -> None:
        size = os.fstat(self._log).st_size
        if size > _LOG_KEEP_BYTES:  # keep a chatty long-lived app from filling the disk
            os.ftruncate(self._log, 0)
            size = 0
        self._log_mark = size

    def _tail(self, limit: int = 4096) -> str:
        """What the child printed since the current call began (its last ``limit`` bytes)."""
        if self._log < 0:
            return ""
        size = os.fstat(self._log).st_size
        start = max(self._log_mark, size - limit)
        return os.pread(self._log, max(0, size - start), start).decode(errors="replace")

    def _msg(self, ctx: AppContext, what: str) -> str:
        return (f"tenant {self.tenant!r}: app {self.spec.name!r} on {ctx.source!r} "
                f"(chunk {ctx.chunk}): {what}")


def _enter_cgroup(procs_files: list[str]) -> list[str]:
    """A command prefix that moves itself into the cgroups, then runs what follows it."""
    script = 'for f; do [ "$f" = -- ] && break; echo $$ > "$f" || exit 125; shift; done; ' \
             'shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *procs_files, "--"]


def _descendant(pid: int, depth: int) -> int:
    """The first child's first child... ``depth`` levels down from ``pid`` (0 if none yet)."""
    for _ in range(depth):
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return 0
        if not kids:
            return 0
        pid = int(kids[0])
    return pid


def _ctx_json(ctx: AppContext) -> dict[str, object]:
    return {"tenant": ctx.tenant, "app": ctx.app, "source": ctx.source,
            "tables": list(ctx.tables), "chunk": ctx.chunk}


def _crash_site(log: str, app_dir: str) -> str:
    """`` at w.py:12 in wrangle``: the newest frame in the app's files of a faulthandler dump."""
    for path, line, func in _FRAME.findall(log):
        if path.startswith(app_dir + os.sep):
            return f" at {os.path.relpath(path, app_dir)}:{line} in {func}"
    return ""
