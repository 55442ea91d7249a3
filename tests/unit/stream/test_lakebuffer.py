"""The lake buffer's bounds: the profile's, capped by what each broker tolerates unacked."""

import time

import pyarrow as pa
import pytest

from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.stream.brokers import Delivery, open_broker
from simbdp.stream.lakebuffer import LakeBuffer, LakeLimits, lake_limits
from simbdp.testing import stream_tenant


def setup(tmp_path, broker: dict, lake: dict | None = None, **app):  # type: ignore[no-untyped-def]
    profile = TenantProfile.model_validate({**stream_tenant(**app), "lake": lake or {}})
    config = PlatformConfig.model_validate({"home": tmp_path, "broker": broker})
    return config, profile, open_broker(config.broker)


@pytest.mark.parametrize(("broker", "secs", "messages"), [
    ({"kind": "embedded", "lease_secs": 30}, 15.0, 100_000),
    ({"kind": "rabbitmq", "url": "amqp://guest:guest@127.0.0.1:5672/"}, 60.0, 2000 - 400),
    ({"kind": "nats", "url": "nats://127.0.0.1:4222", "lease_secs": 10}, 5.0,
     20_000 // 4 - 400),
])
def test_limits_are_capped_by_the_broker(tmp_path, broker, secs, messages):
    config, profile, b = setup(tmp_path, broker)
    limits = lake_limits(config, profile, profile.app("ev"), b)
    assert limits == LakeLimits(max_bytes=128 * 1024**2, max_secs=secs, max_messages=messages)


def test_big_micro_batches_on_rabbitmq_commit_one_at_a_time(tmp_path):
    config, profile, b = setup(tmp_path, {"kind": "rabbitmq", "url": "amqp://h/"},
                               {"max_wait_secs": 5, "target_file_mb": 1}, batch_max_rows=5000)
    assert lake_limits(config, profile, profile.app("ev"), b) == \
        LakeLimits(max_bytes=1024**2, max_secs=5, max_messages=1)


def deliveries(*ids: str) -> list[Delivery]:
    return [Delivery(id=i, body=b"{}", published_at=0.0, redelivered=False, headers={})
            for i in ids]


def test_the_buffer_fills_by_count_bytes_and_age():
    buf = LakeBuffer(LakeLimits(max_bytes=10**9, max_secs=0.2, max_messages=3))
    assert buf.add({"t": pa.table({"x": [1]})}, deliveries("a")) is None
    assert not buf.due() and "a" in buf.ids
    outputs, got = buf.add({"t": pa.table({"x": [2, 3]}), "q": pa.table({"y": [1]})},
                           deliveries("b", "c"))
    assert [d.id for d in got] == ["a", "b", "c"]
    assert outputs["t"].column("x").to_pylist() == [1, 2, 3] and outputs["q"].num_rows == 1
    assert len(buf) == 0 and buf.take() is None and not buf.ids
    buf.add({"t": pa.table({"x": [4]})}, deliveries("d"))
    time.sleep(0.25)
    assert buf.due()
    assert buf.drop() == 1 and not buf.due()
    big = LakeBuffer(LakeLimits(max_bytes=100, max_secs=60, max_messages=10**6))
    taken = big.add({"t": pa.table({"x": list(range(100))})}, deliveries("e"))
    assert taken is not None and taken[0]["t"].num_rows == 100
