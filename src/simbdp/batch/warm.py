"""What a warm worker keeps between the files of one tenant: sinks, ensured tables, app runners.

A file's job takes its sinks and its app runner from a :class:`Warm`. The worker keeps them
for the next file only while the manager says more files of the same tenant are queued, and
drops them as soon as a file of another tenant comes, a file ends in anything but a clean
outcome, or (for DuckDB's held database file and writer lock) after ``HOLD_SECS``, so readers
in other processes wait for the lock at most that long.
"""

from __future__ import annotations

import time
from contextlib import suppress

from simbdp.apps import AppRunner
from simbdp.coredms.base import Sink, open_sink
from simbdp.errors import SimbdpError
from simbdp.profiles.models import AppSpec, TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["HOLD_SECS", "Warm"]

#: the longest a worker keeps a tenant's DuckDB file and writer lock between files
HOLD_SECS = 2.0


class Warm:
    """Sinks (opened once, tables ensured once per tenant) and app runners, reused by jobs."""

    def __init__(self) -> None:
        self._sinks: dict[str, Sink] = {}
        self._ensured: set[tuple[str, str]] = set()
        self._runners: dict[tuple[str, str], AppRunner] = {}
        self.tenant: str | None = None  # whose sessions and runners are kept
        self._seen: dict[str, TenantProfile] = {}  # the profile each tenant last came with

    def sink(self, config: PlatformConfig, name: str, profile: TenantProfile) -> Sink:
        """The sink ``name`` with the tenant's tables ensured (once) and, where the sink can,
        the tenant's session held. Raises SinkUnavailable (transient)."""
        self.tenant = profile.tenant_id
        sink = self._sinks.get(name)
        if sink is None:
            sink = self._sinks[name] = open_sink(config.sinks[name])
        hold = getattr(sink, "hold", None)
        if hold is not None:
            hold(profile)
        if (name, profile.tenant_id) not in self._ensured:
            sink.ensure_tables(profile)
            self._ensured.add((name, profile.tenant_id))
        return sink

    def runner(self, config: PlatformConfig, tenant: str, app: AppSpec) -> AppRunner:
        """The tenant app's runner, its process started once and reused across files."""
        key = (tenant, app.name)
        runner = self._runners.get(key)
        if runner is None:
            runner = AppRunner(config.apps_dir(tenant), app, tenant, config.apps)
            runner.start()
            self._runners[key] = runner
        return runner

    def switch(self, profile: TenantProfile) -> None:
        """Before a file of ``profile``'s tenant: let go of what another tenant's files
        kept; drop everything if the tenant's profile changed (a live reload) since its last
        file here, so its tables are ensured and its apps started again under the new one."""
        tenant = profile.tenant_id
        if self._seen.get(tenant, profile) != profile:
            self.drop()
        self._seen[tenant] = profile
        if self.tenant is not None and tenant != self.tenant:
            self.release()
            self.close_runners()
        self.tenant = tenant

    def settle(self, *, clean: bool, more: bool) -> None:
        """After a file: keep what is warm while ``more`` files of the tenant are queued. A
        file that did not end cleanly drops everything (its sinks' state is unknown); a held
        DuckDB session older than ``HOLD_SECS`` is released either way."""
        if not clean:
            self.drop()
        elif not more:
            self.release()
            self.close_runners()
        else:
            now = time.monotonic()
            for sink in self._sinks.values():
                since = _held_since(sink, self.tenant)
                if since is not None and now - since >= HOLD_SECS:
                    sink.release(self.tenant)  # type: ignore[attr-defined]

    @property
    def holding(self) -> bool:
        """Whether a sink session (a lock other processes may wait for) is held."""
        return any(_held_since(s, self.tenant) is not None for s in self._sinks.values())

    def hold_left(self) -> float:
        """Seconds until the oldest held session is due for release."""
        since = [t for s in self._sinks.values() if (t := _held_since(s, self.tenant))]
        return max(0.0, HOLD_SECS - (time.monotonic() - min(since))) if since else 0.0

    def release(self) -> None:
        """Release held sink sessions; keep the rest."""
        for sink in self._sinks.values():
            release = getattr(sink, "release", None)
            if release is not None:
                release()

    def drop(self) -> None:
        """Release sessions, stop app processes and close the sinks; their tables are
        ensured again next time."""
        self.close_runners()
        for sink in self._sinks.values():
            with suppress(SimbdpError, OSError):
                sink.close()
        self._sinks.clear()
        self._ensured.clear()
        self.tenant = None

    def close_runners(self) -> None:
        """Stop the app processes kept; the next file starts its app again."""
        for runner in self._runners.values():
            with suppress(SimbdpError, OSError):
                runner.close()
        self._runners.clear()

    close = drop


def _held_since(sink: Sink, tenant: str | None) -> float | None:
    held_since = getattr(sink, "held_since", None)
    return held_since(tenant) if held_since is not None and tenant is not None else None
