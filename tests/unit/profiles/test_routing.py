"""Stream routing in the profile: ``stream.route_by`` and each stream app's ``message_types``
go together, and each type is one app's."""

from pathlib import Path

import pytest
import yaml

from simbdp.errors import ConfigError
from simbdp.profiles import TenantProfile, load_profile

TABLES = [{"name": n, "columns": [{"name": "id", "type": "text"}]}
          for n in ("clicks", "orders", "files")]


def profile(*apps: dict, route_by: str | None = "type") -> dict:
    stream = {"route_by": route_by} if route_by else {}
    return {"tenant_id": "acme", "tables": TABLES, "stream": stream, "apps": list(apps)}


def stream_app(name: str, table: str, types: list[str] | None) -> dict:
    app: dict = {"name": name, "kind": "stream", "tables": [table]}
    if types is not None:
        app["message_types"] = types
    return app


def test_routed_profile_loads_with_its_types():
    p = TenantProfile.model_validate(profile(
        stream_app("click", "clicks", ["click"]),
        stream_app("order", "orders", ["order", "order_v2"]),
        {"name": "load", "tables": ["files"], "file_pattern": "f*.csv"}))
    assert p.routed and p.stream.route_by == "type"
    assert p.app("order").message_types == ["order", "order_v2"]


def test_no_routing_is_the_default():
    p = TenantProfile.model_validate(profile(stream_app("ev", "clicks", None), route_by=None))
    assert not p.routed and p.app("ev").message_types == []


@pytest.mark.parametrize(("apps", "route_by", "words"), [
    ([stream_app("click", "clicks", ["click"]), stream_app("order", "orders", ["click"])],
     "type", "message type 'click' is taken by apps 'click' and 'order'"),
    ([stream_app("click", "clicks", ["click"]), stream_app("order", "orders", None)],
     "type", "every stream app lists its message_types; ['order'] do not"),
    ([stream_app("click", "clicks", ["click"])],
     None, "list message_types, but stream.route_by"),
    ([{"name": "load", "tables": ["files"], "message_types": ["click"]}],
     "type", "message_types is for stream apps"),
    ([stream_app("routed", "clicks", ["click"])],
     "type", "no stream app may be named 'routed'"),
])
def test_inconsistent_routing_is_refused_with_the_reason(tmp_path: Path, apps, route_by, words):
    path = tmp_path / "acme.yaml"
    path.write_text(yaml.safe_dump(profile(*apps, route_by=route_by)))
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    assert words in str(e.value)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 64, "9type"])
def test_route_by_must_be_a_header_or_field_name(bad: str):
    with pytest.raises(ValueError, match="route_by"):
        TenantProfile.model_validate(profile(stream_app("click", "clicks", ["click"]),
                                             route_by=bad or "\n"))
