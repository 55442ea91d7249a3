"""Session-wide fixtures for the real services on this machine.

A missing service skips the test locally and fails it when SIMBDP_REQUIRE_SERVICES=1 (CI).
Each test gets its own PostgreSQL database, RabbitMQ vhost or NATS stream prefix, dropped after.
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from simbdp.testing import missing

PG_ADMIN_DSN = os.environ.get("SIMBDP_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
RABBIT_HOST = os.environ.get("SIMBDP_TEST_RABBIT_HOST", "127.0.0.1")
NATS_URL = os.environ.get("SIMBDP_TEST_NATS", "nats://127.0.0.1:4222")


def _require(service: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError as e:
        missing(f"{service} is not reachable at {host}:{port}: {e}")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A fresh PostgreSQL database for this test; its DSN."""
    _require("PostgreSQL", "127.0.0.1", 5432)
    import psycopg

    name = f"simbdp_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A fresh RabbitMQ vhost for this test (admin guest user); its AMQP URL."""
    _require("RabbitMQ", RABBIT_HOST, 5672)
    vhost = f"simbdp_t_{uuid.uuid4().hex[:12]}"
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", vhost], check=True, capture_output=True)
    subprocess.run(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                   check=True, capture_output=True)
    yield f"amqp://guest:guest@{RABBIT_HOST}:5672/{vhost}"
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True)


@pytest.fixture
def nats_url() -> str:
    where = urlsplit(NATS_URL)
    _require("NATS", where.hostname or "127.0.0.1", where.port or 4222)
    return NATS_URL


@pytest.fixture
def unique_prefix() -> str:
    """A prefix that keeps this test's broker streams/subjects apart from others'."""
    return f"t{uuid.uuid4().hex[:10]}"
