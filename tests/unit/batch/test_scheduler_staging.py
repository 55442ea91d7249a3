import os

import pytest

from simbdp.batch.scheduler import FairQueue
from simbdp.batch.staging import FileTracker, check_inside, check_name, ignored
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


@pytest.mark.parametrize("name", ["..", "a..b.csv", "x\x01.csv", "new\nline.csv", "a" * 300])
def test_bad_names(name):
    with pytest.raises(Rejected) as e:
        check_name("acme", name)
    assert "acme" in str(e.value)


def test_symlink_out_of_staging(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (tmp_path / "secret.csv").write_text("a\n1\n")
    os.symlink(tmp_path / "secret.csv", staging / "link.csv")
    with pytest.raises(Rejected, match="symlink out of the staging folder"):
        check_inside("acme", staging / "link.csv", staging)


def test_ignored_and_stability(tmp_path):
    assert ignored("x.csv.part") and ignored(".hidden.csv") and not ignored("x.csv")
    f = tmp_path / "x.csv"
    f.write_text("a\n")
    tr = FileTracker(stable_secs=1.0)
    assert not tr.ready(f, now=0.0)
    assert not tr.ready(f, now=0.5)
    with f.open("a") as fh:
        fh.write("more\n")
    assert not tr.ready(f, now=1.2)  # changed: the clock restarts
    assert tr.ready(f, now=2.3)
