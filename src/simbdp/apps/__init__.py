"""Tenant apps: the contract and the isolated runner."""

from simbdp.apps.base import AppContext
from simbdp.apps.runner import AppRunner

__all__ = ["AppContext", "AppRunner"]
