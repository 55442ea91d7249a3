"""simbdp's NATS header parser reads every header block as nats-py's own does."""

from __future__ import annotations

import itertools
import random

import pytest
from nats.aio.client import Client

from simbdp.stream.brokers.nats_js import _Client, _header_lines

PIECES = [b"a", b"B", b"-", b":", b" ", b"\t", b"\r", b"\n", b"\r\n", b"\x1c", b"\x0b",
          "é".encode(), b"\xff", b"", b"1"]


@pytest.mark.parametrize("raw", [
    b"Nats-Msg-Id: m1\r\nx-published-at: 1795649728.25\r\n\r\n",
    b"table: orders\r\nNats-Msg-Id:m2\r\n",
    b"  Spaced Name : v\r\nok:\t v \r\n:empty name\r\nno colon\r\n",
    "name: caf\u00e9\r\n".encode() + b"bad: \xff\xfe\r\n\xc3\xa9t\xc3\xa9: x\r\n",
    b"a\x1cb: hidden space\r\nx\x0by: vertical tab\r\n",
    b"",
])
def test_known_blocks_parse_as_nats_py_does(raw: bytes) -> None:
    assert _header_lines(raw) == Client._parse_header_lines(raw)


def test_random_blocks_parse_as_nats_py_does() -> None:
    rng = random.Random(11)
    for n in itertools.islice(itertools.cycle(range(16)), 20_000):
        raw = b"".join(rng.choice(PIECES) for _ in range(n))
        assert _header_lines(raw) == Client._parse_header_lines(raw), raw


def test_the_broker_client_uses_it() -> None:
    assert _Client._parse_header_lines is _header_lines
