"""``simbdp schema profile|platform``: the JSON Schema of a tenant profile or platform.yaml."""

from __future__ import annotations

import json
from enum import StrEnum

import typer

from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig

__all__ = ["json_schema", "schema"]


class Kind(StrEnum):
    profile = "profile"
    platform = "platform"


def json_schema(kind: str) -> dict[str, object]:
    """The JSON Schema of a tenant profile (``profile``) or of ``platform.yaml``."""
    if kind == "profile":
        out = TenantProfile.model_json_schema()
    else:
        out = PlatformConfig.model_json_schema()
        # the home comes from --home or SIMBDP_HOME, never from the file itself
        out["properties"].pop("home")
        out["required"] = [r for r in out.get("required", []) if r != "home"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **out}


def schema(kind: Kind = typer.Argument(..., help="profile or platform")) -> None:
    """Print the JSON Schema of a tenant profile or of platform.yaml, for editors.

    Save it beside your files (``simbdp schema profile > profile.schema.json``) and start a
    profile with ``# yaml-language-server: $schema=profile.schema.json``.
    """
    print(json.dumps(json_schema(kind.value), indent=2))
