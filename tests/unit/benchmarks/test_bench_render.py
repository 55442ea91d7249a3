"""benchmarks/render.py: docs/benchmarks.md from a result file (behaviour, not seconds)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _load() -> ModuleType:
    # benchmarks/ is not an installed package: load the module from its file
    spec = importlib.util.spec_from_file_location("bench_render", ROOT / "benchmarks" /
                                                  "render.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_render"] = mod
    spec.loader.exec_module(mod)
    return mod


render = _load()


def rec(scenario: str, what: str, engine: str, seconds: float, rate: float, unit: str,
        vs_bare: float | None, **extra: Any) -> dict[str, Any]:
    return {"scenario": scenario, "what": what, "engine": engine, "seconds": seconds,
            "runs": [seconds, seconds * 1.1, seconds * 0.9], "rate": rate, "unit": unit,
            "vs_bare": vs_bare, **extra}


RESULT: dict[str, Any] = {
    "kind": "simbdp-benchmarks", "mode": "quick", "started": "2026-11-25T18:00:00+00:00",
    "wall_seconds": 240.0, "sizes": {"repeat": 3, "event_files": [1, 10, 100]},
    "machine": {"cores": 2, "memory_gb": 23.5, "kernel": "6.1", "python": "3.11.7",
                "cpu": "AMD EPYC", "load_avg_at_start": [1.0, 2.0, 3.0], "psql": "psql 15",
                "versions": {"duckdb": "1.4.0", "dlt": "1.5.0", "pyarrow": "21.0"}},
    "results": [
        rec("whole:reddit", "-> DuckDB", "DuckDB read_csv (bare)", 1.0, 1000.0, "rows/s", None,
            peak_pss_mb=100.0),
        rec("whole:reddit", "-> DuckDB", "simbdp serve", 2.0, 500.0, "rows/s", 0.5,
            peak_pss_mb=300.0),
        rec("whole:reddit", "-> DuckDB", "simbdp ingest", 5.0, 200.0, "rows/s", 0.2),
        rec("whole:reddit", "-> DuckDB", "dlt", 4.0, 250.0, "rows/s", 0.25,
            note="pipeline.run only"),
        rec("whole:reddit", "-> DuckDB", "dlt, whole process", 8.0, 125.0, "rows/s", 0.125),
        rec("flood", "10 files -> DuckDB", "DuckDB read_csv loop (bare)", 0.1, 100.0,
            "files/s", None),
        rec("flood", "10 files -> DuckDB", "simbdp serve", 0.2, 50.0, "files/s", 0.5),
        {**rec("pickup", "drop -> accepted, p50", "simbdp serve", 0.0012, 1.2, "ms", None),
         "note": "4 files"},
    ],
    "stream": [{"scenario": "throughput", "what": "RabbitMQ -> DuckDB",
                "engine": "simbdp", "seconds": 5.0, "runs": 3, "rate": 10_000.0,
                "unit": "msg/s", "vs_bare": 0.8},
               {"scenario": "throughput", "what": "simbdp: p99 latency", "engine": "nats",
                "seconds": None, "runs": [900.0, 1100.0], "rate": 1000.0, "unit": "ms",
                "vs_bare": None}],
}

REGIONS = ["machine", "whole", "memory", "flood", "pickup", "seed000", "tenants", "seed004",
           "stream"]


def template(keep: str = "hand-written, kept") -> str:
    parts = ["# Benchmarks", "", "Prose about PSS that matters.", ""]
    for name in REGIONS:
        parts += [f"## {name}", "", f"<!-- BEGIN GENERATED: {name} -->", f"_{keep}_",
                  f"<!-- END GENERATED: {name} -->", "", f"After {name}.", ""]
    return "\n".join(parts)


def region(text: str, name: str) -> str:
    start = text.index(f"<!-- BEGIN GENERATED: {name} -->")
    return text[start:text.index(f"<!-- END GENERATED: {name} -->", start)]


def test_tables_show_simbdp_beside_each_alternative_with_ratios() -> None:
    out = render.render_doc(RESULT, template(), source="r.json", img_dir=None)
    whole = region(out, "whole")
    assert "**reddit**" in whole
    assert "| -> DuckDB | DuckDB read_csv (bare) |" in whole
    serve = next(line for line in whole.splitlines() if "| simbdp serve |" in line)
    # vs bare 50%, vs dlt 200% (500 / 250 rows/s), peak PSS 300 MB, the runs shown
    assert "**50%**" in serve and "**200%**" in serve and "| 300 |" in serve
    assert "2.00 (2.00 / 2.20 / 1.80)" in serve
    assert "pipeline.run only" in whole
    # the CLI, a whole process, is compared with dlt's whole process: 200 / 125 rows/s
    ingest = next(line for line in whole.splitlines() if "| simbdp ingest |" in line)
    assert "**160%**" in ingest
    assert "**50%**" in region(out, "flood")
    assert "1.2 ms" in region(out, "pickup")
    assert "**throughput**" in region(out, "stream")
    assert "| RabbitMQ -> DuckDB | simbdp |" in region(out, "stream")
    # a latency has no seconds: its runs are shown in its unit; no memory column there
    assert "| simbdp: p99 latency | nats | - (900 / 1,100 ms) | 1,000 ms | - |" in \
        region(out, "stream")
    machine = region(out, "machine")
    assert "| cores | 2 (AMD EPYC) |" in machine and "dlt 1.5.0" in machine
    assert "`r.json`" in machine
    assert "| sizes (quick) | repeat 3, event_files [1, 10, 100] |" in machine


def test_prose_and_regions_without_records_are_kept() -> None:
    out = render.render_doc(RESULT, template(), source="r.json", img_dir=None)
    assert "Prose about PSS that matters." in out
    for name in REGIONS:
        assert f"After {name}." in out
    for name in ("memory", "seed000", "tenants", "seed004"):
        assert "_hand-written, kept_" in region(out, name)
    assert "_hand-written, kept_" not in region(out, "whole")


def test_rendering_twice_gives_the_same_document() -> None:
    once = render.render_doc(RESULT, template(), source="r.json", img_dir=None)
    assert render.render_doc(RESULT, once, source="r.json", img_dir=None) == once


def test_a_document_without_a_region_is_refused() -> None:
    text = template().replace("<!-- BEGIN GENERATED: seed004 -->", "")
    with pytest.raises(SystemExit, match="seed004"):
        render.render_doc(RESULT, text, source="r.json", img_dir=None)


def test_plots_are_written_and_linked(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = render.render_doc(RESULT, template(), source="r.json", img_dir=tmp_path,
                            img_prefix="img")
    for name in ("whole", "flood", "stream"):
        assert (tmp_path / f"bench-{name}.png").stat().st_size > 1000
        assert f"(img/bench-{name}.png)" in region(out, name)
    assert not (tmp_path / "bench-pickup.png").exists()


def test_main_rewrites_the_document_from_a_result_file(tmp_path: Path) -> None:
    import json

    result = tmp_path / "run.json"
    result.write_text(json.dumps(RESULT), encoding="utf-8")
    doc = tmp_path / "docs" / "benchmarks.md"
    doc.parent.mkdir()
    doc.write_text(template(), encoding="utf-8")
    render.main([str(result), "--doc", str(doc), "--no-plots"])
    assert "| simbdp serve |" in doc.read_text(encoding="utf-8")
