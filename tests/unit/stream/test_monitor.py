import time

from simbdp.profiles.models import AppSpec
from simbdp.state import StateStore
from simbdp.stream.monitor import ScalingPolicy, StreamMonitor
from simbdp.testing import make_platform, stream_tenant

SPEC = AppSpec(name="ev", kind="stream", tables=["events"], min_instances=1, max_instances=3,
               target_backlog=1000, target_latency_ms=500, batch_max_rows=1000)


def test_scale_up_needs_two_hot_windows_and_respects_cooldown_and_max():
    p = ScalingPolicy(high_windows=2, idle_windows=3, cooldown_secs=10)
    assert p.observe("t", SPEC, 1, 5000, 100, 9000, now=0) is None
    d = p.observe("t", SPEC, 1, 5000, 100, 9000, now=1)
    assert d.action == "scale_up" and d.instances == 2 and "backlog 5000" in d.reason
    assert p.observe("t", SPEC, 2, 5000, 100, 9000, now=2) is None  # cooling down
    assert p.observe("t", SPEC, 2, 5000, 100, 9000, now=12) is None  # hot count restarted
    assert p.observe("t", SPEC, 2, 5000, 100, 9000, now=13).instances == 3
    p.observe("t", SPEC, 3, 5000, 100, 9000, now=30)
    assert p.observe("t", SPEC, 3, 5000, 100, 9000, now=31) is None  # at max


def test_latency_alone_scales_up_and_idle_scales_down_to_min():
    p = ScalingPolicy(high_windows=2, idle_windows=3, cooldown_secs=0)
    p.observe("t", SPEC, 1, 0, 900, 50, now=0)
    assert "p99 latency 900 ms" in p.observe("t", SPEC, 1, 0, 900, 50, now=1).reason
    for i in range(2):
        assert p.observe("t", SPEC, 2, 0, 10, 0, now=2 + i) is None
    d = p.observe("t", SPEC, 2, 0, 10, 0, now=5)
    assert d.action == "scale_down" and d.instances == 1
    for i in range(5):
        assert p.observe("t", SPEC, 1, 0, 10, 0, now=6 + i) is None  # at min


def test_no_flapping_on_alternating_load():
    p = ScalingPolicy(high_windows=2, idle_windows=3, cooldown_secs=0)
    for i in range(20):
        backlog = 5000 if i % 2 else 0
        assert p.observe("t", SPEC, 2, backlog, 10, 10, now=i) is None


def report(tenant: str, messages: int, backlog: int = 0) -> dict:
    now = time.time()
    return {"tenant": tenant, "app": "ev", "instance": "i1", "window_start": now - 1,
            "window_end": now, "messages": messages, "bytes": messages * 100,
            "rows_loaded": messages, "rows_rejected": 0, "latency_mean_ms": 5.0,
            "latency_p99_ms": 9.0, "backlog": backlog}


def test_quota_pauses_then_resumes_when_raised(tmp_path):
    tenant = {**stream_tenant(), "stream": {"max_messages_per_day": 100}}
    platform = make_platform(tmp_path / "home", [tenant])
    store = StateStore.open(platform.config)
    store.set_desired("acme", "ev", 2)
    mon = StreamMonitor(platform, store)
    mon.ingest_reports([report("acme", 80)])
    mon.evaluate()
    assert store.desired()[0]["instances"] == 2
    mon.ingest_reports([report("acme", 40)])
    mon.evaluate()
    row = store.desired()[0]
    assert row["instances"] == 0 and "over the quota of 100" in row["paused_reason"]
    assert store.decisions("acme")[0]["action"] == "pause"
    raised = {**stream_tenant(), "stream": {"max_messages_per_day": 1000}}
    platform2 = make_platform(tmp_path / "home", [raised])
    StreamMonitor(platform2, store).evaluate()
    assert store.desired()[0]["instances"] == 1
    assert store.decisions("acme")[0]["action"] == "resume"
    assert len(store.stream_reports("acme")) == 2


def test_monitor_scales_from_reports(tmp_path):
    platform = make_platform(tmp_path / "home", [stream_tenant(target_backlog=100)])
    store = StateStore.open(platform.config)
    store.set_desired("acme", "ev", 1)
    mon = StreamMonitor(platform, store, ScalingPolicy(cooldown_secs=0))
    for _ in range(2):
        mon.ingest_reports([report("acme", 500, backlog=5000)])
        mon.evaluate()
    assert store.desired()[0]["instances"] == 2
    assert store.decisions("acme")[0]["action"] == "scale_up"
