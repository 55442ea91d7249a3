"""``simbdp serve``: the batch manager, the stream manager, the stream monitor and the API."""

from __future__ import annotations

import threading
from collections.abc import Callable

from simbdp.api.app import serve_api
from simbdp.batch import BatchIngestManager
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform
from simbdp.state import StateStore
from simbdp.stream.manager import StreamManager
from simbdp.stream.monitor import StreamMonitor

__all__ = ["run_platform"]


def run_platform(platform: Platform, store: StateStore, stop: threading.Event) -> None:
    """Run every part until ``stop`` is set; each finishes its work in flight, then returns.

    The stream parts run in threads, each with its own state-store connection; a part that
    fails is logged and does not take the others down.
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

    threads = [
        part("stream-manager", lambda s: StreamManager(platform, s).run(stop)),
        part("stream-monitor", lambda s: StreamMonitor(platform, s).run(stop)),
        part("api", lambda s: serve_api(platform, stop)),
    ]
    BatchIngestManager(platform, store).serve(stop)
    for t in threads:
        t.join(timeout=60)
