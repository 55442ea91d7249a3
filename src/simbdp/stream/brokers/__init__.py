"""The messagingsystem: one contract, three brokers (embedded SQLite, RabbitMQ, NATS)."""

from __future__ import annotations

import importlib

from simbdp.profiles.platform import BrokerSettings
from simbdp.stream.brokers.base import (
    BROKERS,
    Broker,
    Delivery,
    OutMessage,
    TenantCredentials,
    register_broker,
)

__all__ = ["BROKERS", "Broker", "Delivery", "OutMessage", "TenantCredentials", "open_broker",
           "register_broker"]

_MODULES = {"embedded": "embedded", "rabbitmq": "rabbitmq", "nats": "nats_js"}


def open_broker(settings: BrokerSettings, prefix: str = "simbdp", **kw: object) -> Broker:
    """The broker client for ``settings.kind`` (not yet connected)."""
    importlib.import_module(f"simbdp.stream.brokers.{_MODULES[settings.kind]}")
    return BROKERS[settings.kind](settings, prefix, **kw)
