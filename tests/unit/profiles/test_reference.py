import json
from pathlib import Path

import jsonschema_rs
import pytest
import yaml
from typer.testing import CliRunner

from simbdp.cli.main import app
from simbdp.profiles.models import TenantProfile
from simbdp.profiles.platform import PlatformConfig
from simbdp.profiles.reference import EXAMPLE_PLATFORM, EXAMPLE_PROFILE, reference

DOC = Path(__file__).parents[3] / "docs" / "profiles.md"


def test_docs_profiles_md_is_up_to_date():
    assert DOC.read_text(encoding="utf-8") == reference(), (
        "docs/profiles.md is out of date: run "
        "`python -m simbdp.profiles.reference > docs/profiles.md`")


@pytest.mark.parametrize("model", [TenantProfile, PlatformConfig])
def test_every_field_is_described_in_the_reference(model):
    page = reference()
    for name, f in model.model_fields.items():
        assert f.description, f"{model.__name__}.{name} has no description"
        assert f"| `{name}` |" in page


def test_examples_are_valid_and_pass_the_json_schema(tmp_path):
    profile, platform = yaml.safe_load(EXAMPLE_PROFILE), yaml.safe_load(EXAMPLE_PLATFORM)
    TenantProfile.model_validate(profile)
    PlatformConfig.model_validate({**platform, "home": tmp_path})
    for kind, data in (("profile", profile), ("platform", platform)):
        out = CliRunner().invoke(app, ["schema", kind])
        assert out.exit_code == 0, out.output
        validator = jsonschema_rs.validator_for(json.loads(out.stdout))
        assert validator.is_valid(data)


def test_json_schema_catches_what_the_model_refuses():
    out = CliRunner().invoke(app, ["schema", "profile"])
    validator = jsonschema_rs.validator_for(json.loads(out.stdout))
    bad = yaml.safe_load(EXAMPLE_PROFILE)
    bad["tables"][0]["name"] = "Bad Name"
    bad["batch"]["colour"] = "red"
    errors = [e.message for e in validator.iter_errors(bad)]
    assert len(errors) == 2, errors


def test_schema_of_an_unknown_kind_is_refused():
    out = CliRunner().invoke(app, ["schema", "tenant"])
    assert out.exit_code == 2
