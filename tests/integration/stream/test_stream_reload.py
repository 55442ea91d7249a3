"""Live reload for streams: an app whose spec changed has its instances drained and started
again with the new spec; a removed tenant's instances stop; other apps are left alone."""

from __future__ import annotations

import yaml

from simbdp.reload import Reloader
from simbdp.stream.heartbeat import heartbeat_path
from simbdp.stream.manager import StreamManager
from simbdp.testing import stream_tenant, wait_for


def rows(n: int, tag: str) -> list[dict]:
    return [{"id": f"{tag}{i}", "n": i, "note": "x"} for i in range(n)]


def _write(env, profile: dict) -> None:  # type: ignore[no-untyped-def]
    path = env.config.tenants_dir / f"{profile['tenant_id']}.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(profile))
    tmp.replace(path)


def test_changed_spec_restarts_instances_and_removed_tenant_stops(make_stream_env):
    env = make_stream_env([stream_tenant("acme"), stream_tenant("beta")])
    manager = StreamManager(env.platform, env.store)
    reloader = Reloader(env.platform)
    reloader.attach(manager)
    env.store.set_desired("acme", "ev", 1)
    env.store.set_desired("beta", "ev", 1)
    try:
        manager.reconcile()
        [old] = manager.apps[("acme", "ev")].instances
        [beta] = manager.apps[("beta", "ev")].instances
        assert wait_for(lambda: heartbeat_path(env.config.home, old.id).exists())

        _write(env, stream_tenant("acme", batch_max_rows=50))
        changes = reloader.check(env.store)
        assert changes is not None and changes.changed == ["acme"]
        manager.reconcile()
        assert old.proc.poll() is not None or old in manager.apps[("acme", "ev")].stopping
        assert wait_for(lambda: (manager.reconcile(), old.proc.poll() is not None
                                 and len(manager.apps[("acme", "ev")].instances) == 1)[1])
        assert old.proc.returncode == 0  # drained on SIGTERM, not killed
        [new] = manager.apps[("acme", "ev")].instances
        assert new.id != old.id
        assert manager.platform.tenant("acme").app("ev").batch_max_rows == 50
        assert manager.apps[("beta", "ev")].instances == [beta]  # unchanged: left alone
        [restart] = [d for d in env.store.decisions("acme") if d["action"] == "restart"]
        assert "profile of tenant 'acme' changed" in restart["reason"]
        env.publish("acme", rows(120, "a"), id_field="id")
        assert wait_for(lambda: (manager.reconcile(), env.count("acme") == 120)[1])

        (env.config.tenants_dir / "beta.yaml").unlink()
        assert reloader.check(env.store).removed == ["beta"]  # type: ignore[union-attr]
        assert wait_for(lambda: (manager.reconcile(), beta.proc.poll() is not None)[1])
        assert beta.proc.returncode == 0
        assert manager.apps[("beta", "ev")].instances == []
    finally:
        manager.shutdown()
