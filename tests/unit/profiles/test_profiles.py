from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from simbdp.cli.main import app
from simbdp.errors import ConfigError
from simbdp.profiles import TenantProfile, load_platform, load_profile

GOOD = {
    "tenant_id": "acme",
    "tables": [{"name": "comments", "key": "((subreddit, id), ups)",
                "columns": [{"name": "subreddit", "type": "text"}, {"name": "id", "type": "text"},
                            {"name": "ups", "type": "int"}, {"name": "body", "type": "string"}]}],
    "batch": {"file_types": ["csv", "jsonl"], "max_file_bytes": "50MB"},
}


def write(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_seed_002_key_becomes_primary_key():
    p = TenantProfile.model_validate(GOOD)
    assert p.table("comments").primary_key == ["subreddit", "id", "ups"]
    assert p.namespace == "acme"
    assert p.batch.max_file_bytes == 50_000_000
    schema = p.table("comments").arrow_schema()
    assert not schema.field("id").nullable and schema.field("body").nullable


def test_invalid_profile_lists_every_error_with_file_and_field(tmp_path):
    bad = {**GOOD, "tenant_id": "Acme!", "batch": {"file_types": ["xml"], "max_file_bytes": "x"}}
    path = write(tmp_path / "acme.yaml", bad)
    with pytest.raises(ConfigError) as e:
        load_profile(path)
    fields = {loc for _, loc, _ in e.value.problems}
    assert {"tenant_id", "batch.file_types.0", "batch.max_file_bytes"} <= fields
    assert all(f == str(path) for f, _, _ in e.value.problems)


def test_unknown_type_and_bad_key_columns(tmp_path):
    bad = {"tenant_id": "acme", "tables": [{"name": "t", "primary_key": ["nope"],
                                            "columns": [{"name": "a", "type": "blob"}]}]}
    with pytest.raises(ConfigError) as e:
        load_profile(write(tmp_path / "acme.yaml", bad))
    text = str(e.value)
    assert "unknown column type 'blob'" in text


def test_app_must_target_known_tables():
    with pytest.raises(ValueError, match="unknown tables"):
        TenantProfile.model_validate({**GOOD, "apps": [
            {"name": "a", "entrypoint": "m:f", "tables": ["other"]}]})


def test_file_name_must_match_tenant(tmp_path):
    with pytest.raises(ConfigError, match="does not match the file name"):
        load_profile(write(tmp_path / "other.yaml", GOOD))


def test_routing_prefers_apps_then_table_prefix():
    p = TenantProfile.model_validate({
        **GOOD,
        "tables": [*GOOD["tables"], {"name": "users", "columns": [{"name": "x", "type": "int"}]}],
        "apps": [{"name": "logs", "entrypoint": "m:f", "tables": ["comments"],
                  "file_pattern": "log-*"}]})
    assert p.route_file("log-1.csv")[0].name == "logs"
    assert p.route_file("users-2024.csv") == (None, ["users"])
    assert p.route_file("other.csv") is None


def test_platform_unknown_sink_disables_only_that_tenant(tmp_path):
    (tmp_path / "tenants").mkdir()
    data = {**GOOD, "tables": [{**GOOD["tables"][0], "sinks": ["warehouse"]}]}
    write(tmp_path / "tenants" / "acme.yaml", data)
    write(tmp_path / "tenants" / "beta.yaml", {**GOOD, "tenant_id": "beta"})
    platform = load_platform(tmp_path)
    assert list(platform.tenants) == ["beta"]
    assert "acme.yaml: tables.comments.sinks: unknown sink 'warehouse'" in platform.broken["acme"]
    with pytest.raises(ConfigError, match="'acme' is disabled: its profile did not load"):
        platform.tenant("acme")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("tenant_id: bad\ntables: [\n", "syntax"),
        ("tenant_id: bad\ntables: []\n", "tables: List should have at least 1 item"),
        ("tenant_id: bad\ntables: 3\nextra: 1\n", "extra: Extra inputs are not permitted"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_broken_profile_file_is_listed_with_its_reason(tmp_path, text, words):
    (tmp_path / "tenants").mkdir()
    write(tmp_path / "tenants" / "acme.yaml", GOOD)
    (tmp_path / "tenants" / "bad.yaml").write_text(text)
    platform = load_platform(tmp_path)
    assert list(platform.tenants) == ["acme"]
    assert list(platform.broken) == ["bad"]
    assert "bad.yaml" in platform.broken["bad"] and words in platform.broken["bad"]
    assert "\n" not in platform.broken["bad"]


def test_cli_check_prints_errors(tmp_path):
    write(tmp_path / "acme.yaml", GOOD)
    write(tmp_path / "bad.yaml", {"tenant_id": "bad", "tables": []})
    result = CliRunner().invoke(app, ["tenants", "check", str(tmp_path)])
    assert result.exit_code == 1
    assert "ok acme" in result.stdout
    assert "bad.yaml" in result.stderr and "tables" in result.stderr


def test_a_stream_app_into_a_delta_sink_and_another_sink_loads(tmp_path):
    (tmp_path / "tenants").mkdir()
    write(tmp_path / "platform.yaml", {"sinks": {"lake": {"kind": "delta", "path": "lake"}}})
    data = {**GOOD, "tables": [{**GOOD["tables"][0], "sinks": ["default", "lake"]}],
            "apps": [{"name": "ev", "kind": "stream", "tables": ["comments"]}],
            "lake": {"target_file_mb": 16, "max_wait_secs": 5}}
    write(tmp_path / "tenants" / "acme.yaml", data)
    platform = load_platform(tmp_path)
    assert list(platform.tenants) == ["acme"] and not platform.broken
    assert platform.tenant("acme").lake.max_wait_secs == 5
