"""The staging watcher reports complete files from inotify at once, without a thread."""

from __future__ import annotations

import os
import select
from pathlib import Path

from simbdp.batch.watcher import StagingWatcher


def _events(w: StagingWatcher) -> list[tuple[str, str, str]]:
    fd = w.fileno()
    assert fd is not None
    select.select([fd], [], [], 5)
    return [(t, p.name, s) for t, p, s in w.drain()]


def test_renamed_in_and_closed_after_writing_are_complete(tmp_path: Path) -> None:
    staging, elsewhere = tmp_path / "staging", tmp_path / "src"
    staging.mkdir()
    elsewhere.mkdir()
    w = StagingWatcher()
    w.watch("acme", staging)
    w.watch("acme", staging)  # once is enough
    w.start()
    try:
        assert w.drain() == []
        (elsewhere / "a.csv").write_text("x\n")
        os.rename(elsewhere / "a.csv", staging / "a.csv")  # moved in from another folder
        assert ("acme", "a.csv", "complete") in _events(w)
        with (staging / "b.csv").open("w") as f:
            f.write("x\n")
            f.flush()
            got = _events(w)
            assert ("acme", "b.csv", "seen") in got
            assert ("acme", "b.csv", "complete") not in got  # still open
        assert ("acme", "b.csv", "complete") in _events(w)
        (staging / "sub").mkdir()  # folders are not files
        assert [e for e in w.drain() if e[1] == "sub"] == []
    finally:
        w.stop()
    assert w.fileno() is None
