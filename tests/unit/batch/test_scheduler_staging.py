import os
import socket

import pytest

from simbdp.batch.scheduler import FairQueue
from simbdp.batch.staging import FileTracker, check_name, check_regular, ignored
from simbdp.errors import Rejected


def test_fair_queue_round_robin():
    q: FairQueue[str] = FairQueue()
    for i in range(1000):
        q.push("big", f"b{i}")
    q.push("small", "s0")
    first = [q.pop() for _ in range(2)]
    assert ("small", "s0") in first


def test_fair_queue_per_tenant_limit():
    q: FairQueue[int] = FairQueue(per_tenant=lambda t: 1)
    q.push("a", 1)
    q.push("a", 2)
    assert q.pop() == ("a", 1)
    assert q.pop() is None
    q.done("a")
    assert q.pop() == ("a", 2)


@pytest.mark.parametrize("name", ["..", "a..b.csv", "x\x01.csv", "new\nline.csv", "a" * 300,
                                  ".hidden.csv", "x.csv.part", "x.csv~"])
def test_bad_names(name):
    with pytest.raises(Rejected) as e:
        check_name("acme", name)
    assert "acme" in str(e.value)


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p, o: os.symlink(o, p), "is a symlink"),
        (lambda p, o: os.symlink(p.with_name("real.csv"), p), "is a symlink"),
        (lambda p, o: os.mkfifo(p), "is a FIFO"),
        (lambda p, o: os.link(o, p), "has 2 hard links"),
        (lambda p, o: socket.socket(socket.AF_UNIX).bind(str(p)), "is a socket"),
        (lambda p, o: p.mkdir(), "is a folder"),
    ],
    ids=["symlink-out", "symlink-in", "fifo", "hard-link", "socket", "folder"],
)
def test_only_regular_single_link_files_pass(tmp_path, make, words):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "real.csv").write_text("a\n1\n")
    outside = tmp_path / "secret.csv"
    outside.write_text("a\n2\n")
    make(staging / "x.csv", outside)
    with pytest.raises(Rejected) as e:  # a FIFO with no writer must not block here
        check_regular("acme", staging / "x.csv")
    assert words in str(e.value) and "'acme'" in str(e.value) and "'x.csv'" in str(e.value)
    assert check_regular("acme", staging / "real.csv") == 4


def test_ignored_and_stability(tmp_path):
    assert ignored("x.csv.part") and ignored(".hidden.csv") and not ignored("x.csv")
    for name in ("x.csv.part", ".hidden.csv", "x.tmp", "x~", "x.crdownload"):
        with pytest.raises(Rejected):  # what staging ignores, uploads refuse
            check_name("acme", name)
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    tr = FileTracker(stable_secs=1.0)
    assert not tr.ready(f, now=0.0)
    assert not tr.ready(f, now=0.5)
    with f.open("a") as fh:
        fh.write("more\n")
    assert not tr.ready(f, now=1.2)  # changed: the clock restarts
    assert tr.ready(f, now=2.3)
