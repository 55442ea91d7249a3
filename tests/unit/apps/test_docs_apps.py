"""The two examples of docs/apps.md, run as written through the real runner."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from simbdp.apps import AppContext, AppRunner
from simbdp.profiles import TenantProfile
from simbdp.quality import conform

DOC = Path(__file__).parents[3] / "docs" / "apps.md"


def example(title: str) -> tuple[TenantProfile, str, str]:
    """(profile, module file name, source) of the example under ``## Example N``."""
    section = DOC.read_text(encoding="utf-8").split(f"\n## {title}", 1)[1].split("\n## ", 1)[0]
    [profile] = re.findall(r"^```yaml\n(.*?)^```$", section, flags=re.S | re.M)
    [source] = re.findall(r"^```python\n(.*?)^```$", section, flags=re.S | re.M)
    name = re.match(r"# (\w+\.py)\n", source)
    assert name, f"docs/apps.md {title}: the code must start with '# <module>.py'"
    return TenantProfile.model_validate(yaml.safe_load(profile)), name.group(1), source


def run(tmp_path: Path, title: str, data: pa.Table) -> tuple[TenantProfile, dict[str, pa.Table]]:
    profile, module, source = example(title)
    (tmp_path / module).write_text(source, encoding="utf-8")
    [spec] = profile.apps
    assert spec.entrypoint is not None and spec.entrypoint.startswith(module[:-3] + ":")
    ctx = AppContext(tenant=profile.tenant_id, app=spec.name, source="f", tables=tuple(spec.tables))
    with AppRunner(tmp_path, spec, profile.tenant_id) as runner:
        out = runner.call(data, ctx)
    for name, rows in out.items():  # what the platform does next: no row may be rejected
        assert conform(rows, profile.table(name), "f").rows_rejected == 0, name
    return profile, out


def test_example_1_single_table(tmp_path):
    data = pa.table({"Order ID": [1, 2, 3], "Customer": ["ann", "test-x", "bob"],
                     "Amount Cents": [1250, 1, 799]})
    _, out = run(tmp_path, "Example 1", data)
    assert out["orders"].to_pylist() == [
        {"order_id": 1, "customer": "ann", "amount": Decimal("12.50")},
        {"order_id": 3, "customer": "bob", "amount": Decimal("7.99")}]


def test_example_2_several_tables(tmp_path):
    data = pa.table({"session": ["s1", "s2", "s3"], "user": [7, 8, 9],
                     "pages": [["/", "/cart"], [], None]})
    _, out = run(tmp_path, "Example 2", data)
    assert out["sessions"].to_pylist() == [
        {"session_id": "s1", "user_id": 7, "clicks": 2},
        {"session_id": "s2", "user_id": 8, "clicks": 0},
        {"session_id": "s3", "user_id": 9, "clicks": 0}]
    assert out["clicks"].to_pylist() == [{"session_id": "s1", "page": "/"},
                                         {"session_id": "s1", "page": "/cart"}]


@pytest.mark.parametrize("title", ["Example 1", "Example 2"])
def test_examples_declare_their_tables(title):
    profile, _, _ = example(title)
    assert [a.tables for a in profile.apps] == [[t.name for t in profile.tables]]
