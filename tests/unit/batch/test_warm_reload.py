"""A warm worker drops what it kept for a tenant whose profile changed (a live reload)."""

from __future__ import annotations

from simbdp.batch.warm import Warm
from simbdp.profiles.models import TenantProfile
from simbdp.testing import tenant_profile


def test_changed_profile_drops_ensured_tables_and_runners() -> None:
    p1 = TenantProfile.model_validate(tenant_profile("acme"))
    p2 = p1.model_copy(update={"enabled": False})
    warm = Warm()
    warm.switch(p1)
    warm._ensured.add(("default", "acme"))
    warm.switch(p1)  # the same profile: kept
    assert warm._ensured == {("default", "acme")}
    warm.switch(TenantProfile.model_validate(tenant_profile("beta")))
    warm.switch(p2)  # back to acme, changed meanwhile: dropped
    assert warm._ensured == set() and warm.tenant == "acme"
