"""Platform config and tenant service profiles."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simbdp.profiles.models import AppSpec, BatchLimits, StreamLimits, TenantProfile
from simbdp.profiles.platform import PlatformConfig, SinkSettings
from simbdp.profiles.tables import Column, TableSpec

if TYPE_CHECKING:
    from simbdp.profiles.loader import (
        Platform,
        check_profiles,
        load_platform,
        load_profile,
        save_profile,
    )

__all__ = [
    "AppSpec",
    "BatchLimits",
    "Column",
    "Platform",
    "PlatformConfig",
    "SinkSettings",
    "StreamLimits",
    "TableSpec",
    "TenantProfile",
    "check_profiles",
    "load_platform",
    "load_profile",
    "save_profile",
]

_LOADER = {"Platform", "check_profiles", "load_platform", "load_profile", "save_profile"}


def __getattr__(name: str) -> Any:
    # lazily: a batch worker unpickles profiles, it never reads their files (nor YAML)
    if name in _LOADER:
        from simbdp.profiles import loader

        return getattr(loader, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
