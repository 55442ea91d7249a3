"""Generators of realistic test data (Reddit-like comments, sensor readings), vectorised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

__all__ = ["reddit_comments", "sensor_readings", "write_reddit_csv"]

_SUBREDDITS = np.array(["python", "datascience", "aww", "news", "worldnews", "askreddit",
                        "programming", "dataengineering", "funny", "science"])
_WORDS = np.array(["data", "lake", "stream", "batch", "tenant", "quota", "arrow", "duckdb",
                   "ingest", "queue", "fast", "exactly", "once", "the", "a", "of", "and"])


def reddit_comments(n: int, seed: int = 0, start_id: int = 0) -> pa.Table:
    """``n`` comments shaped like seed 002's Reddit data (about 150 bytes per CSV row)."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("c", np.arange(start_id, start_id + n).astype(str))
    words = _WORDS[rng.integers(0, len(_WORDS), size=(n, 15))]
    body = np.array([" ".join(w) for w in words]) if n <= 20_000 else _bodies(words)
    return pa.table({
        "created_utc": pa.array(1_420_070_400 + rng.integers(0, 86_400 * 365, n)),
        "ups": pa.array(rng.integers(-50, 5000, n)),
        "subreddit": pa.array(_SUBREDDITS[rng.integers(0, len(_SUBREDDITS), n)]),
        "id": pa.array(ids),
        "author": pa.array(np.char.add("user", rng.integers(0, 50_000, n).astype(str))),
        "score": pa.array(rng.integers(-50, 5000, n)),
        "body": pa.array(body),
    })


def _bodies(words: np.ndarray) -> np.ndarray:
    out = words[:, 0]
    for i in range(1, words.shape[1]):
        out = np.char.add(np.char.add(out, " "), words[:, i])
    return out


def write_reddit_csv(path: Path, rows: int, *, chunk_rows: int = 200_000, seed: int = 0) -> Path:
    """Write ``rows`` comments as CSV in chunks (flat memory for big files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with pacsv.CSVWriter(path, reddit_comments(1, seed).schema) as w:
        done = 0
        while done < rows:
            n = min(chunk_rows, rows - done)
            w.write_table(reddit_comments(n, seed + done, start_id=done))
            done += n
    return path


def sensor_readings(n: int, seed: int = 0) -> pa.Table:
    """Weather-station readings: station, ISO timestamp, temperature, humidity."""
    rng = np.random.default_rng(seed)
    ts = np.datetime64("2024-01-01T00:00:00") + rng.integers(0, 86_400 * 30, n).astype(
        "timedelta64[s]")
    return pa.table({
        "station": pa.array(np.char.add("st", rng.integers(0, 40, n).astype(str))),
        "ts": pa.array(np.datetime_as_string(ts)),
        "temperature": pa.array(np.round(rng.normal(12, 8, n), 2)),
        "humidity": pa.array(np.round(rng.uniform(10, 100, n), 1)),
    })
