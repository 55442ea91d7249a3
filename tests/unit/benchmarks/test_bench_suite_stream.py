"""benchmarks/suite.py runs the stream benchmark as a subprocess with ``--quick --json PATH``
when it has that option, and takes its records as they are."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]

FAKE_WITH_JSON = '''
import argparse, json, sys
ap = argparse.ArgumentParser()
ap.add_argument("--quick", action="store_true")
ap.add_argument("--json")
args = ap.parse_args()
rows = [{"scenario": "drain", "what": "RabbitMQ -> DuckDB", "engine": "simbdp",
         "seconds": 1.0, "runs": [1.0], "rate": 10000.0, "unit": "msg/s", "vs_bare": 0.9,
         "quick": args.quick}]
open(args.json, "w").write(json.dumps(rows))
'''
@pytest.fixture
def suite(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT))
    from benchmarks import suite as mod
    return mod


def fake_package(tmp_path: Path, source: str) -> None:
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bench_stream_ingest.py").write_text(source)


@pytest.mark.parametrize("quick", [True, False])
def test_stream_records_come_from_its_json_option(suite: ModuleType, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  quick: bool) -> None:
    fake_package(tmp_path, FAKE_WITH_JSON)
    monkeypatch.chdir(tmp_path)  # `python -m benchmarks...` finds the fake first
    run = suite.Run(suite.QUICK, "postgresql://unused", tmp_path)
    rows = suite.stream(run, quick)
    assert [(r["scenario"], r["engine"], r["quick"]) for r in rows] == [
        ("drain", "simbdp", quick)]


def test_a_stream_benchmark_without_json_is_skipped(suite: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake_package(tmp_path, "import argparse\nargparse.ArgumentParser().parse_args()\n")
    monkeypatch.chdir(tmp_path)
    run = suite.Run(suite.QUICK, "postgresql://unused", tmp_path)
    assert suite.stream(run, True) == []
    assert "no --json option" in capsys.readouterr().out
