"""``simbdp serve``: the batch manager, the stream manager, the stream monitor and the API."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from simbdp.api.app import serve_api
from simbdp.batch import BatchIngestManager
from simbdp.coredms.compaction import LakeCompactor
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.reload import Reloader
from simbdp.state import StateStore
from simbdp.stream.manager import StreamManager
from simbdp.stream.monitor import StreamMonitor

__all__ = ["run_platform"]


def run_platform(platform: Platform, store: StateStore, stop: threading.Event, *,
                 reload_secs: float = 1.0) -> None:
    """Run every part until ``stop`` is set; each finishes its work in flight, then returns.

    The stream parts run in threads, each with its own state-store connection; a part that
    fails is logged and does not take the others down. Tenant profiles changed meanwhile are
    reloaded within ``reload_secs`` and handed to every part (``apply``).
    """
    log = get_logger("simbdp.service")

    def part(name: str, target: Callable[[StateStore], None]) -> threading.Thread:
        def body() -> None:
            own = StateStore.open(platform.config)
            try:
                target(own)
            except Exception as e:
                log.error("part_failed", part=name, reason=f"{type(e).__name__}: {e}")
            finally:
                own.close()
        t = threading.Thread(target=body, name=f"simbdp-{name}", daemon=True)
        t.start()
        return t

    # one reloader: profile files changed while serving reach every part (docs/design.md,
    # "Live reload"); each part is attached as it is built, so none misses a change
    reloader = Reloader(platform, poll_secs=reload_secs)
    batch = BatchIngestManager(platform, store)
    reloader.attach(batch)

    def attached(part: Any) -> Any:
        reloader.attach(part)
        return part

    threads = [
        part("stream-manager", lambda s: attached(StreamManager(platform, s)).run(stop)),
        part("lake", lambda s: attached(LakeCompactor(platform)).run(stop, s)),
        part("stream-monitor", lambda s: attached(StreamMonitor(platform, s)).run(stop)),
        part("api", lambda s: serve_api(platform, stop, attach=reloader.attach)),
        part("reloader", lambda s: reloader.run(stop, s)),
    ]
    batch.serve(stop)
    for t in threads:
        t.join(timeout=60)
