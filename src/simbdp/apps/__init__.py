"""Tenant apps: the contract and the isolated runner.

``AppRunner`` is imported on first use, so the app process (``simbdp.apps.child``) does not
load the runner's dependencies (pydantic, the profiles) before the tenant's code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from simbdp.apps.base import AppContext

if TYPE_CHECKING:
    from simbdp.apps.runner import AppRunner

__all__ = ["AppContext", "AppRunner"]


def __getattr__(name: str) -> Any:
    if name == "AppRunner":
        from simbdp.apps.runner import AppRunner

        return AppRunner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
