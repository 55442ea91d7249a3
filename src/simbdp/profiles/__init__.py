"""Platform config and tenant service profiles."""

from simbdp.profiles.loader import (
    Platform,
    check_profiles,
    load_platform,
    load_profile,
    save_profile,
)
from simbdp.profiles.models import AppSpec, BatchLimits, StreamLimits, TenantProfile
from simbdp.profiles.platform import PlatformConfig, SinkSettings
from simbdp.profiles.tables import Column, TableSpec

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
