"""``/metrics``: figures aggregated from the state store, who may read them, API requests."""

from __future__ import annotations

import time

from prometheus_client.parser import text_string_to_metric_families

from simbdp.state.store import today


def _samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def _file(store, tenant: str, outcome: str, nbytes: int, loaded: int, rejected: int,
          secs: float, app: str | None = None) -> None:
    rid = store.start_record(tenant, "batch", f"{outcome}.csv", bytes=nbytes, app=app)
    store.db.execute("UPDATE ingestions SET started_at = started_at - ? WHERE id = ?",
                     [secs, rid])
    store.finish_record(rid, outcome, rows_loaded=loaded, rows_rejected=rejected)


def _report(store, tenant: str, instance: str, end: float, messages: int, dead: int,
            loaded: int, mean_ms: float | None, backlog: int) -> None:
    store.add_stream_report({
        "tenant": tenant, "app": "ev", "instance": instance, "window_start": end - 1,
        "window_end": end, "messages": messages, "bytes": messages * 10, "rows_loaded": loaded,
        "rows_rejected": dead, "latency_mean_ms": mean_ms,
        "latency_p99_ms": None if mean_ms is None else 2 * mean_ms, "backlog": backlog})


def test_metrics_are_the_records_aggregated(api):
    s = api.store
    _file(s, "acme", "processed", 100, 10, 1, 0.3)
    _file(s, "acme", "processed", 200, 20, 0, 7.0)
    _file(s, "acme", "failed", 50, 0, 0, 0.2)
    s.add_record("acme", "batch", "big.csv", "rejected", bytes=999, reason="file_too_big")
    s.start_record("acme", "batch", "inflight.csv", bytes=5)  # running: not counted yet
    now = time.time()
    _report(s, "beta", "i1", now - 100, 30, 2, 28, 40.0, 9)
    _report(s, "beta", "i1", now, 10, 0, 10, 10.0, 3)
    _report(s, "beta", "i2", now - 1, 5, 5, 0, None, 50)
    s.set_desired("beta", "ev", 2)
    s.add_decision("beta", "ev", "restart", "crashed", 1, 1)
    s.add_decision("beta", "ev", "restart", "crashed", 1, 1)
    s.add_decision("beta", "ev", "scale_up", "backlog", 1, 2)
    assert s.reserve_files("acme", today(), 3, 350, 10_000, 10**11)
    s.add_messages("beta", today(), 45, 450)

    r = api.client.get("/metrics", headers=api.h("op"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    m = _samples(r.text)

    def v(name: str, **labels: str) -> float:
        return m[(name, frozenset(labels.items()))]

    assert v("simbdp_batch_files_total", tenant="acme", app="", outcome="processed") == 2
    assert v("simbdp_batch_files_total", tenant="acme", app="", outcome="rejected") == 1
    assert v("simbdp_batch_bytes_total", tenant="acme", app="", outcome="processed") == 300
    assert v("simbdp_batch_bytes_total", tenant="acme", app="", outcome="failed") == 50
    assert v("simbdp_rows_loaded_total", tenant="acme", app="", path="batch") == 30
    assert v("simbdp_rows_rejected_total", tenant="acme", app="", path="batch") == 1
    assert v("simbdp_batch_file_seconds_count", tenant="acme", app="") == 2
    assert v("simbdp_batch_file_seconds_bucket", tenant="acme", app="", le="0.5") == 1
    assert v("simbdp_batch_file_seconds_bucket", tenant="acme", app="", le="10.0") == 2
    assert 7.3 <= v("simbdp_batch_file_seconds_sum", tenant="acme", app="") < 7.5
    assert v("simbdp_rows_loaded_total", tenant="beta", app="ev", path="stream") == 38
    assert v("simbdp_stream_messages_total", tenant="beta", app="ev") == 45
    assert v("simbdp_stream_dead_letters_total", tenant="beta", app="ev") == 7
    assert v("simbdp_stream_latency_seconds_count", tenant="beta", app="ev") == 38
    assert abs(v("simbdp_stream_latency_seconds_sum", tenant="beta", app="ev")
               - (28 * 0.040 + 10 * 0.010)) < 1e-9
    assert v("simbdp_stream_backlog", tenant="beta", app="ev") == 3
    assert v("simbdp_stream_latency_p99_seconds", tenant="beta", app="ev") == 0.02
    assert v("simbdp_stream_instances_desired", tenant="beta", app="ev") == 2
    assert v("simbdp_stream_instances_running", tenant="beta", app="ev") == 2
    assert v("simbdp_stream_decisions_total", tenant="beta", app="ev", action="restart") == 2
    assert v("simbdp_quota_used", tenant="acme", quota="files") == 3
    assert v("simbdp_quota_allowed", tenant="acme", quota="files") == 10_000
    assert v("simbdp_quota_used", tenant="beta", quota="messages") == 45
    assert v("simbdp_quota_used", tenant="beta", quota="files") == 0


def test_metrics_need_the_operator_key_unless_public(api, make_api):
    assert api.client.get("/metrics").status_code == 401
    assert api.client.get("/metrics", headers=api.h("acme")).status_code == 403
    public = make_api(api={"metrics_public": True})
    r = public.client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert r.status_code == 200 and r.text.endswith("# EOF\n")
    assert "application/openmetrics-text" in r.headers["content-type"]


def test_api_requests_are_counted_by_route_template_and_status(api):
    api.client.get("/v1/tenants/acme/records", headers=api.h("acme"))
    api.client.get("/v1/tenants/nobody/records", headers=api.h("acme"))
    api.client.get("/no/such/path")
    m = _samples(api.client.get("/metrics", headers=api.h("op")).text)
    route = "/v1/tenants/{tenant}/records"
    assert m[("simbdp_api_requests_total", frozenset(
        {"route": route, "method": "GET", "status": "200"}.items()))] == 1
    assert m[("simbdp_api_requests_total", frozenset(
        {"route": route, "method": "GET", "status": "404"}.items()))] == 1
    assert m[("simbdp_api_requests_total", frozenset(
        {"route": "unmatched", "method": "GET", "status": "404"}.items()))] == 1
