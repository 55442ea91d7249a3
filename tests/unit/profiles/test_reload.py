"""The reloader: what counts as a change, and each part gets the new platform once."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from simbdp.profiles import Platform
from simbdp.reload import Reloader, diff_platforms
from simbdp.state import StateStore
from simbdp.testing import make_platform, tenant_profile


class _Part:
    def __init__(self, platform: Platform):
        self.platform = platform
        self.applied: list[Platform] = []

    def apply(self, platform: Platform) -> None:
        self.platform = platform
        self.applied.append(platform)


def _write(platform: Platform, profile: dict, name: str | None = None) -> Path:
    path = platform.config.tenants_dir / f"{name or profile['tenant_id']}.yaml"
    path.write_text(yaml.safe_dump(profile))
    return path


def test_diff_names_added_changed_removed_and_broken(tmp_path: Path) -> None:
    old = make_platform(tmp_path / "h", [tenant_profile("a"), tenant_profile("b"),
                                         tenant_profile("c")])
    a2 = old.tenants["a"].model_copy(update={"enabled": False})
    new = Platform(old.config, tenants={"a": a2, "b": old.tenants["b"],
                                        "d": old.tenants["b"]},
                   broken={"c": "c.yaml: syntax"})
    d = diff_platforms(old, new)
    assert (d.added, d.changed, d.removed, d.broken) == (["d"], ["a"], ["c"],
                                                        {"c": "c.yaml: syntax"})
    assert not diff_platforms(new, new)
    # fixed: a broken tenant comes back as added
    assert diff_platforms(new, old).added == ["c"]


def test_reloader_applies_once_per_change_and_ignores_a_touch(tmp_path: Path) -> None:
    platform = make_platform(tmp_path / "h", [tenant_profile("a")])
    store = StateStore.open(platform.config)
    reloader = Reloader(platform)
    part = _Part(platform)
    reloader.attach(part)
    assert reloader.check(store) is None and part.applied == []

    _write(platform, tenant_profile("b"))
    changes = reloader.check(store)
    assert changes is not None and changes.added == ["b"]
    assert set(part.platform.tenants) == {"a", "b"}
    assert part.platform.config is platform.config  # the running config is kept
    assert [d["action"] for d in store.decisions("b")] == ["profile_added"]

    path = platform.config.tenants_dir / "a.yaml"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, not changed
    changes = reloader.check(store)
    assert changes is not None and not changes
    assert store.decisions("a") == []

    late = _Part(platform)  # built from the first platform, attached after a change
    reloader.attach(late)
    assert late.platform is part.platform

    (platform.config.tenants_dir / "b.yaml").write_text("tenant_id: b\ntables: [\n")
    changes = reloader.check(store)
    assert changes is not None and changes.removed == ["b"] and "b" in changes.broken
    assert part.platform.broken["b"] == late.platform.broken["b"]
