"""The stream instance process: ``python -m simbdp.stream.consumer --home H --tenant T --app A
--instance I [--parent-pid P]`` runs one :class:`~simbdp.stream.instance.StreamInstance` on
uvloop until SIGTERM or SIGINT.

SIGTERM drains the batch in flight and ends the process within ``STOP_DEADLINE_SECS`` whatever
it is waiting on; the instance also stops when the manager that started it dies (Linux
``PR_SET_PDEATHSIG``, and one check of the parent pid for the race).

The parts: ``instance.py`` (the loop: collect, pipeline, report), ``microbatch.py`` (one
micro-batch from deliveries to acks), ``route.py`` (a routed tenant's micro-batches split by
message type among its stream apps; its instances run with ``--app routed``), ``transform.py``
(app, conform), ``decode.py``, ``window.py`` (report figures), ``heartbeat.py``, ``retry.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import threading
from pathlib import Path

import uvloop

from simbdp.observe.logs import configure_logging, get_logger
from simbdp.profiles import load_platform
from simbdp.stream.brokers import open_broker
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.instance import StreamInstance

# StreamInstance and heartbeat_path are re-exported: callers import them from here
__all__ = ["STOP_DEADLINE_SECS", "StreamInstance", "heartbeat_path", "main"]

STOP_DEADLINE_SECS = 10.0  # after SIGTERM, the process ends by then whatever it waits on


def _die_with_parent(parent: int | None) -> None:
    """SIGTERM this process when the manager that started it dies (Linux PDEATHSIG); if it
    died before this ran, stop now."""
    if parent is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


async def _amain(home: Path, tenant: str, app: str, instance: str, parent: int | None
                 ) -> None:
    platform = load_platform(home)
    configure_logging(platform.config.home / "logs" / "simbdp.jsonl")
    log = get_logger("simbdp.stream", tenant=tenant, app=app, instance=instance)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            return
        stop.set()
        log.info("instance_stopping", signal=sig.name, deadline_secs=STOP_DEADLINE_SECS)

        def hard_stop() -> None:
            log.error("instance_stop_overdue", deadline_secs=STOP_DEADLINE_SECS,
                      reason="did not drain in time; exiting (unacked messages come back)")
            os._exit(143)
        timer = threading.Timer(STOP_DEADLINE_SECS, hard_stop)
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    _die_with_parent(parent)
    broker = open_broker(platform.config.broker)
    try:
        await StreamInstance(platform, tenant, app, instance, broker).run(stop)
    finally:
        heartbeat_path(platform.config.home, instance).unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--home", type=Path, required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--app", required=True)
    ap.add_argument("--instance", required=True)
    ap.add_argument("--parent-pid", type=int, default=None,
                    help="the manager's pid: stop when it dies")
    a = ap.parse_args()
    # uvloop: the broker clients' per-message work (frames, tasks) costs less on it
    uvloop.run(_amain(a.home, a.tenant, a.app, a.instance, a.parent_pid))


if __name__ == "__main__":
    main()
