"""Live reload: ``simbdp serve`` notices tenant profiles added, changed or removed.

One :class:`Reloader` per serve polls the modification times of ``<home>/tenants/`` (about
once a second); on a change it calls :func:`load_platform` once and hands the new
:class:`Platform` to every part through its ``apply(platform)``. Profiles are never read
from globals: each part keeps the platform it was last given. ``platform.yaml`` is not
reloaded (the new platform keeps the running config: ports, sinks and workers are held by
running parts); a change to it is logged (``platform_config_changed``, with the keys that
differ and a restart hint), never silently ignored.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from simbdp.errors import ConfigError
from simbdp.observe.logs import get_logger
from simbdp.profiles import Platform, load_platform
from simbdp.profiles.loader import PROFILE_SUFFIXES
from simbdp.state import StateStore

__all__ = ["Changes", "Part", "Reloader", "diff_platforms", "snapshot"]


class Part(Protocol):
    platform: Platform

    def apply(self, platform: Platform) -> None: ...


@dataclass
class Changes:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.removed or self.broken)


def diff_platforms(old: Platform, new: Platform) -> Changes:
    """What changed between two loads: tenants added (or fixed), changed, removed (or gone
    broken, which also lists them in ``broken``), and profiles broken anew or differently."""
    return Changes(
        added=sorted(set(new.tenants) - set(old.tenants)),
        changed=sorted(t for t in set(new.tenants) & set(old.tenants)
                       if new.tenants[t] != old.tenants[t]),
        removed=sorted(set(old.tenants) - set(new.tenants)
                       | (set(old.broken) - set(new.broken) - set(new.tenants))),
        broken={t: r for t, r in new.broken.items() if old.broken.get(t) != r},
    )


def snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Profile file name -> (mtime ns, size, inode): a change in any of them is a change."""
    out: dict[str, tuple[int, int, int]] = {}
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return out
    for p in entries:
        if p.suffix not in PROFILE_SUFFIXES:
            continue
        stamp = _stamp(p)
        if stamp is not None:  # else removed meanwhile
            out[p.name] = stamp
    return out


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class Reloader:
    """Polls ``tenants/`` and hands every new platform to the attached parts."""

    def __init__(self, platform: Platform, *, poll_secs: float = 1.0):
        self.platform, self.poll_secs = platform, poll_secs
        self.log = get_logger("simbdp.reload")
        self._parts: list[Part] = []
        self._lock = threading.Lock()
        self._seen = snapshot(platform.config.tenants_dir)
        self._platform_file = _stamp(platform.config.home / "platform.yaml")

    def attach(self, part: Part) -> None:
        """Hand ``part`` every later platform; one it missed meanwhile is applied now."""
        with self._lock:
            self._parts.append(part)
            if part.platform is not self.platform:
                part.apply(self.platform)

    def check(self, store: StateStore) -> Changes | None:
        """One poll: reload if a profile file changed; the changes, or None."""
        self._check_platform_file()
        now = snapshot(self.platform.config.tenants_dir)
        if now == self._seen:
            return None
        self._seen = now
        try:
            loaded = load_platform(self.platform.config.home)
        except ConfigError as e:  # platform.yaml broken: keep running as we are
            self.log.error("profiles_reload_failed", reason=str(e))
            return None
        new = Platform(config=self.platform.config, tenants=loaded.tenants,
                       broken=loaded.broken)
        changes = diff_platforms(self.platform, new)
        with self._lock:
            self.platform = new
            for part in self._parts:
                try:
                    part.apply(new)
                except Exception as e:  # one part failing must not stop the others
                    self.log.error("profiles_apply_failed", part=type(part).__name__,
                                   reason=f"{type(e).__name__}: {e}")
        if changes:
            self._report(store, changes)
        return changes

    def _report(self, store: StateStore, c: Changes) -> None:
        for tenant, reason in c.broken.items():
            self.log.error("profile_broken", tenant=tenant, reason=reason,
                           hint="the tenant is disabled until its profile file is fixed")
        self.log.info("profiles_reloaded", added=c.added, changed=c.changed,
                      removed=c.removed, broken=sorted(c.broken))
        for action, tenants in (("profile_added", c.added), ("profile_changed", c.changed),
                                ("profile_removed", c.removed)):
            for t in tenants:
                if t not in c.broken:
                    store.add_decision(t, None, action, f"tenant {t!r}: {action[8:]} "
                                            "while serving; in effect now")
        for t, reason in c.broken.items():
            store.add_decision(t, None, "profile_broken",
                                    f"tenant {t!r} disabled: its profile did not load: "
                                    f"{reason}")

    def _check_platform_file(self) -> None:
        """Say when ``platform.yaml`` changed under a running serve: which keys, and that a
        restart applies them."""
        home = self.platform.config.home
        stamp = _stamp(home / "platform.yaml")
        if stamp == self._platform_file:
            return
        self._platform_file = stamp
        try:
            config = load_platform(home).config
        except ConfigError as e:
            self.log.error("platform_config_broken", reason=str(e),
                           hint="the running serve keeps its settings; fix platform.yaml")
            return
        running = self.platform.config
        keys = sorted(k for k in type(running).model_fields
                      if getattr(config, k) != getattr(running, k))
        if keys:
            self.log.warning("platform_config_changed", keys=keys,
                             hint="restart simbdp serve to apply platform.yaml")

    def run(self, stop: threading.Event, store: StateStore) -> None:
        """Poll until ``stop`` is set; ``store``: this thread's own connection."""
        while not stop.wait(self.poll_secs):
            try:
                self.check(store)
            except Exception as e:  # keep watching
                self.log.error("profiles_reload_failed", reason=f"{type(e).__name__}: {e}")
