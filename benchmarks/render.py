"""Regenerate docs/benchmarks.md from a result file of ``python -m benchmarks.suite``.

    python -m benchmarks.render [RESULT.json] [--doc docs/benchmarks.md] [--img docs/img]
        [--no-plots]

Without a file, the newest under ``benchmarks/results/`` is used. Only the regions between
``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->`` in the document are
rewritten; the prose around them is kept as written. A region whose scenario is not in the
result file (a run with ``--only``, or the stream benchmark without ``--json``) is left as it
is. Plots (matplotlib) are written under ``--img`` as ``bench-<region>.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["REGIONS", "render_doc", "render_region", "replace_regions"]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
# region name -> (scenario prefix of its records, title of its plot)
REGIONS: dict[str, tuple[str, str]] = {
    "whole": ("whole:", "One big file: rate by engine (higher is better)"),
    "memory": ("memory", ""),
    "flood": ("flood", "Small files: files/s by engine"),
    "pickup": ("pickup", ""),
    "seed000": ("seed000", "Seed 000: events/s by engine"),
    "tenants": ("tenants", "Seeds 001-003: MB/s with tenants at once"),
    "seed004": ("seed004", "Seed 004: rows/s with failing writes"),
    "stream": ("", "Streams: rate by engine"),
}
_REGION = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[\w-]+) -->\n)(?P<body>.*?)"
                     r"(<!-- END GENERATED: (?P=name) -->)", re.S)


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}" if x < 10 else f"{x:.1f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"**{x:.0%}**"


def _runs(rec: dict[str, Any]) -> str:
    """The median seconds and each run's; a record without seconds (a latency) shows its
    runs in its own unit."""
    runs = rec.get("runs") or []
    secs = rec.get("seconds")
    if isinstance(runs, int):  # a count of runs
        return f"{secs:.2f} ({runs} runs)" if secs is not None else f"- ({runs} runs)"
    if secs is None:
        return "- (" + " / ".join(_num(r) for r in runs) + f" {rec.get('unit', '')})"
    shown = " / ".join(f"{r:.2f}" for r in runs)
    return f"{secs:.2f}" + (f" ({shown})" if len(runs) > 1 else "")


def _table(records: list[dict[str, Any]], with_dlt: bool) -> list[str]:
    head = "| what | engine | seconds (runs) | rate | vs bare |"
    rule = "| --- | --- | ---: | ---: | ---: |"
    if with_dlt:
        head, rule = head + " vs dlt |", rule + " ---: |"
    peaks = any(isinstance(r.get("peak_pss_mb"), int | float) for r in records)
    if peaks:
        head, rule = head + " peak PSS MB |", rule + " ---: |"
    lines, notes = [head, rule], []
    # simbdp serve against dlt's pipeline.run(), simbdp ingest (a whole process) against
    # dlt's whole process when the run has it
    dlt = {r["what"]: r["rate"] for r in records if r["engine"] == "dlt"}
    dlt_proc = {r["what"]: r["rate"] for r in records if r["engine"] == "dlt, whole process"}
    last_what = None
    for r in records:
        what = r["what"] if r["what"] != last_what else ""
        last_what = r["what"]
        row = (f"| {what} | {r['engine']} | {_runs(r)} | {_num(r['rate'])} {r['unit']} | "
               f"{_pct(r.get('vs_bare'))} |")
        if with_dlt:
            base = (dlt_proc.get(r["what"], dlt.get(r["what"]))
                    if r["engine"] == "simbdp ingest" else dlt.get(r["what"]))
            ratio = (r["rate"] / base if base and r["engine"].startswith("simbdp")
                     else None)
            row += f" {_pct(ratio)} |"
        peak = r.get("peak_pss_mb")
        if peaks:
            row += f" {peak:,.0f} |" if isinstance(peak, int | float) else " - |"
        lines.append(row)
        if r.get("note"):
            note = f"{r['engine']}, {r['what']}: {r['note']}"
            if note not in notes:
                notes.append(note)
    if notes:
        lines += ["", *[f"- {n}" for n in notes]]
    return lines


def render_region(name: str, records: list[dict[str, Any]], img: str | None) -> str:
    """The markdown of one region from its records (in the order run)."""
    out: list[str] = []
    if name in ("whole", "stream"):  # one table per data shape / stream scenario
        for scen in dict.fromkeys(r["scenario"] for r in records):
            mine = [r for r in records if r["scenario"] == scen]
            dlt = any(r["engine"] == "dlt" for r in mine)
            out += [f"**{scen.split(':', 1)[-1]}**", "", *_table(mine, with_dlt=dlt), ""]
    elif name == "pickup":
        out += ["| what | latency | |", "| --- | ---: | --- |"]
        out += [f"| {r['what']} | **{_num(r['rate'])} {r['unit']}** | {r.get('note', '')} |"
                for r in records]
        out.append("")
    else:
        out += [*_table(records, with_dlt=any(r["engine"] == "dlt" for r in records)), ""]
    if img:
        out += [f"![{REGIONS[name][1]}]({img})", ""]
    return "\n".join(out)


def render_machine(doc: dict[str, Any], source: str) -> str:
    m = doc.get("machine", {})
    v = m.get("versions", {})
    vers = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    load = m.get("load_avg_at_start")
    return "\n".join([
        f"Generated by `python -m benchmarks.render` from `{source}`: a "
        f"{doc.get('mode', '?')} run (`make bench{'-quick' if doc.get('mode') == 'quick' else ''}`)"
        f" started {doc.get('started', '?')}, {doc.get('wall_seconds', 0):.0f} s in all.",
        "",
        "| machine | |", "| --- | --- |",
        f"| cores | {m.get('cores')} ({m.get('cpu', '?')}) |",
        f"| memory | {m.get('memory_gb')} GiB |",
        f"| kernel | {m.get('kernel')} |",
        f"| Python | {m.get('python')} |",
        f"| load average at the start | {', '.join(map(str, load)) if load else '?'} |",
        f"| psql | {m.get('psql') or '?'} |",
        f"| packages | {vers} |",
        f"| sizes ({doc.get('mode', '?')}) | {_sizes(doc.get('sizes') or {})} |",
        ""])


def _sizes(sizes: dict[str, Any]) -> str:
    def show(v: Any) -> str:
        if isinstance(v, list | tuple):
            return "[" + ", ".join(show(x) for x in v) + "]"
        return f"{v:,}" if isinstance(v, int) else str(v)
    return ", ".join(f"{k} {show(v)}" for k, v in sizes.items())


def _color(engine: str) -> str:
    if engine.endswith("(bare)") or engine.startswith("bare"):
        return "#8c8c8c"
    if engine.startswith("simbdp ingest"):
        return "#6baed6"
    if engine.startswith("simbdp"):
        return "#2171b5"
    if engine.startswith("dlt,"):
        return "#fdbe85"
    return "#fd8d3c" if engine.startswith("dlt") else "#74c476"


def _plot(name: str, records: list[dict[str, Any]], path: Path) -> None:
    """Horizontal bars: one block per group (``what``), one bar per engine, each bar's
    length its rate relative to the group's fastest engine (groups differ in units)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def group(r: dict[str, Any]) -> str:
        if name == "stream":  # the stream benchmark: one group per scenario and broker
            return f"{r['scenario']}: {r['engine']}"
        return (f"{r['scenario'].split(':', 1)[-1]}: " if name == "whole" else "") + r["what"]

    def label(r: dict[str, Any]) -> str:
        return str(r["what"] if name == "stream" else r["engine"])

    # only rates are drawn (longer is faster); latencies and seconds stay in the tables
    records = [r for r in records if str(r.get("unit", "")).endswith("/s") and r.get("rate")]
    if not records:
        return
    groups = list(dict.fromkeys(group(r) for r in records))
    rows: list[tuple[str, dict[str, Any] | None, float]] = []
    for g in groups:
        mine = [r for r in records if group(r) == g]
        best = max(r["rate"] for r in mine) or 1.0
        rows.append((g, None, 0.0))
        rows += [(label(r), r, r["rate"] / best) for r in mine]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.28 * len(rows)))
    ys = list(range(len(rows)))
    for y, (text, r, rel) in zip(ys, rows, strict=True):
        if r is None:
            ax.text(-0.01, y, _wrap(text, 70), ha="right", va="center", fontsize=8,
                    fontweight="bold", transform=ax.get_yaxis_transform())
            continue
        ax.barh(y, rel, height=0.7, color=_color(text))
        ax.text(rel + 0.01, y, f"{_num(r['rate'])} {r['unit']}", va="center", fontsize=7)
    ax.set_yticks([y for y, row in zip(ys, rows, strict=True) if row[1] is not None])
    ax.set_yticklabels([row[0] for row in rows if row[1] is not None], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.3)
    ax.set_xlabel("rate relative to the fastest engine of its group, same run (longer is "
                  "faster)", fontsize=8)
    ax.set_title(REGIONS[name][1], fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _wrap(text: str, width: int = 38) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join([*lines, cur])


def replace_regions(text: str, bodies: dict[str, str]) -> str:
    """``text`` with the body of each named region replaced; other regions kept."""
    def sub(m: re.Match[str]) -> str:
        name = m.group("name")
        if name not in bodies:
            return m.group(0)
        return m.group(1) + bodies[name].rstrip("\n") + "\n" + m.group(4)
    return _REGION.sub(sub, text)


def _region_records(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    if name == "stream":
        return list(doc.get("stream") or [])
    prefix = REGIONS[name][0]
    return [r for r in doc.get("results", []) if r["scenario"].startswith(prefix)]


def render_doc(doc: dict[str, Any], text: str, *, source: str, img_dir: Path | None,
               img_prefix: str = "img") -> str:
    """The document ``text`` with its generated regions filled from result ``doc``; plots
    written under ``img_dir`` (None: none)."""
    present = {m.group("name") for m in _REGION.finditer(text)}
    missing = [n for n in ["machine", *REGIONS] if n not in present]
    if missing:
        raise SystemExit(f"the document has no region(s) {missing}; add "
                         "'<!-- BEGIN GENERATED: name -->' / '<!-- END GENERATED: name -->'")
    bodies = {"machine": render_machine(doc, source)}
    for name in REGIONS:
        recs = _region_records(doc, name)
        if not recs:
            continue
        img = None
        png = None if img_dir is None else img_dir / f"bench-{name}.png"
        if png is not None and REGIONS[name][1]:
            png.unlink(missing_ok=True)
            _plot(name, recs, png)
            img = f"{img_prefix}/bench-{name}.png" if png.exists() else None
        bodies[name] = render_region(name, recs, img)
    return replace_regions(text, bodies)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("result", nargs="?", type=Path)
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--img", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--no-plots", action="store_true")
    args = ap.parse_args(argv)
    result = args.result or max(RESULTS.glob("*.json"), default=None)
    if result is None:
        raise SystemExit("no result file: run `make bench-quick` (or python -m "
                         "benchmarks.suite) first")
    doc = json.loads(result.read_text(encoding="utf-8"))
    try:
        source = str(result.resolve().relative_to(ROOT))
    except ValueError:
        source = result.name
    text = render_doc(doc, args.doc.read_text(encoding="utf-8"), source=source,
                      img_dir=None if args.no_plots else args.img,
                      img_prefix=Path(os.path.relpath(args.img.resolve(),
                                                      args.doc.resolve().parent)).as_posix())
    args.doc.write_text(text, encoding="utf-8")
    print(f"{args.doc}: regenerated from {source}")


if __name__ == "__main__":
    main()
