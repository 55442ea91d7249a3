"""Generators of realistic test data (Reddit comments, sensor readings, flights), vectorised."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["flights", "reddit_comments", "sensor_readings", "write_flights_csv",
           "write_reddit_csv"]

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


_CARRIERS = np.array(["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN", "VX", "FL", "AS", "9E"])
_AIRPORTS = np.array(["EWR", "LGA", "JFK"])
_DESTS = np.array(["IAH", "MIA", "BQN", "ATL", "ORD", "FLL", "IAD", "MCO", "PBI", "TPA", "LAX",
                   "SFO", "DFW", "BOS", "LAS", "MSP", "DTW", "RSW", "SJU", "PHX"])


def flights(n: int, seed: int = 0) -> pa.Table:
    """``n`` flights shaped like nycflights13's ``flights`` (19 columns), with nulls in
    dep_time, dep_delay, arr_time, arr_delay, air_time and tailnum, as in the original."""
    rng = np.random.default_rng(seed)
    day = np.datetime64("2013-01-01") + rng.integers(0, 365, n).astype("timedelta64[D]")
    hour, minute = rng.integers(5, 24, n), rng.integers(0, 60, n)
    sched_dep = hour * 100 + minute
    dep_delay = rng.integers(-15, 120, n)
    dep = (sched_dep + dep_delay) % 2400
    air = rng.integers(20, 600, n)
    sched_arr = (sched_dep + air + 30) % 2400
    arr_delay = dep_delay + rng.integers(-30, 30, n)
    cancelled = rng.random(n) < 0.03

    def na(values: np.ndarray, extra: np.ndarray | None = None) -> pa.Array:
        return pa.array(values, mask=cancelled if extra is None else cancelled | extra)

    stamp = day.astype("datetime64[s]") + (hour * 3600).astype("timedelta64[s]")
    return pa.table({
        "year": pa.array(np.full(n, 2013)),
        "month": pa.array(day.astype("datetime64[M]").astype(int) % 12 + 1),
        "day": pa.array((day - day.astype("datetime64[M]")).astype(int) + 1),
        "dep_time": na(dep), "sched_dep_time": pa.array(sched_dep), "dep_delay": na(dep_delay),
        "arr_time": na((sched_arr + arr_delay) % 2400, rng.random(n) < 0.003),
        "sched_arr_time": pa.array(sched_arr),
        "arr_delay": na(arr_delay, rng.random(n) < 0.005),
        "carrier": pa.array(_CARRIERS[rng.integers(0, len(_CARRIERS), n)]),
        "flight": pa.array(rng.integers(1, 8500, n)),
        "tailnum": pa.array(np.char.add("N", rng.integers(100, 999, n).astype(str)),
                            mask=rng.random(n) < 0.008),
        "origin": pa.array(_AIRPORTS[rng.integers(0, 3, n)]),
        "dest": pa.array(_DESTS[rng.integers(0, len(_DESTS), n)]),
        "air_time": na(air, rng.random(n) < 0.005),
        "distance": pa.array(air * 8 + rng.integers(0, 50, n)),
        "hour": pa.array(hour), "minute": pa.array(minute),
        "time_hour": pa.array(np.char.replace(np.datetime_as_string(stamp), "T", " ")),
    })


def write_flights_csv(path: Path, rows: int, seed: int = 0) -> Path:
    """Write ``rows`` flights as CSV the way R's ``write.csv`` does: nulls as an unquoted NA."""
    table = flights(rows, seed)
    text = pa.table({c: pc.fill_null(pc.cast(table[c], pa.string()), "NA")
                     for c in table.column_names})
    path.parent.mkdir(parents=True, exist_ok=True)
    pacsv.write_csv(text, path, pacsv.WriteOptions(quoting_style="none"))
    return path
