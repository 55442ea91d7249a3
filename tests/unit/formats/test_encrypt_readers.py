"""The readers on encrypted files: decrypted (then decompressed) as a stream, every way a file
can be damaged caught, memory flat on a file of many 1 MiB segments."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard

from simbdp.crypto.files import FileDecryptor, encrypt_file
from simbdp.crypto.keyset import load_keyset, new_keyset, save_keyset
from simbdp.datagen import write_reddit_csv
from simbdp.errors import Rejected
from simbdp.formats import ReadOptions, ReadStats, detect_format, read_batches


@pytest.fixture
def keyset(tmp_path: Path):  # type: ignore[no-untyped-def]
    save_keyset(new_keyset(), tmp_path / "keys" / "k.json")
    return load_keyset(tmp_path / "keys" / "k.json", "acme")


def _read(path: Path, keyset, **kw) -> tuple[pa.Table, ReadStats]:  # type: ignore[no-untyped-def]
    ftype, comp = detect_format(path.name)  # type: ignore[misc]
    stats = ReadStats()
    batches = list(read_batches(path, ReadOptions(ftype, comp, tenant="acme",
                                                  decrypt=FileDecryptor(keyset), **kw), stats))
    return pa.Table.from_batches(batches), stats


@pytest.mark.parametrize(("name", "expected"), [
    ("a.csv.enc", ("csv", "none")), ("a.csv.gz.enc", ("csv", "gzip")),
    ("a.jsonl.zst.enc", ("jsonl", "zstd")), ("a.parquet.enc", None), ("a.enc", None),
    ("a.csv.enc.gz", None)])
def test_detect_format_looks_through_enc(name, expected):
    assert detect_format(name) == expected


def test_every_compression_round_trips_and_counts_plain_bytes(tmp_path, keyset):
    csv = write_reddit_csv(tmp_path / "a.csv", 2000)
    plain = csv.read_bytes()
    lines = b"".join(json.dumps(r).encode() + b"\n" for r in
                     pa.csv.read_csv(csv).to_pylist())
    sources = {"a.csv": plain, "a.csv.gz": gzip.compress(plain),
               "a.jsonl.zst": zstandard.compress(lines)}
    for name, data in sources.items():
        src = tmp_path / "plain" / name
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(data)
        enc = tmp_path / f"{name}.enc"
        encrypt_file(keyset, src, enc)
        table, stats = _read(enc, keyset)
        assert table.num_rows == 2000, name
        assert stats.bytes_read == len(lines if "jsonl" in name else plain), name


def test_not_encrypted_at_all(tmp_path, keyset):
    path = write_reddit_csv(tmp_path / "a.csv", 100).rename(tmp_path / "a.csv.enc")
    with pytest.raises(Rejected) as e:
        _read(path, keyset)
    assert e.value.code == "wrong_key" and "a.csv.enc" in str(e.value)


def test_a_file_shorter_than_its_header(tmp_path, keyset):
    path = tmp_path / "a.csv.enc"
    path.write_bytes(b"\x28" + b"\x00" * 10)
    with pytest.raises(Rejected) as e:
        _read(path, keyset)
    assert e.value.code == "wrong_key"


def test_reordered_segments(tmp_path, keyset):
    src = write_reddit_csv(tmp_path / "a.csv", 40_000)
    enc = tmp_path / "a.csv.enc"
    encrypt_file(keyset, src, enc)
    data = enc.read_bytes()
    seg = 1024**2
    # ciphertext segments are 1 MiB each (the first holds the header): swap the 2nd and 3rd
    assert len(data) > 4 * seg
    enc.write_bytes(data[:seg] + data[2 * seg: 3 * seg] + data[seg: 2 * seg] + data[3 * seg:])
    with pytest.raises(Rejected) as e:
        _read(enc, keyset)
    assert e.value.code == "corrupt_encrypted" and "truncated or was altered" in str(e.value)


PEAK = """
import sys
from pathlib import Path
from simbdp.crypto.files import FileDecryptor
from simbdp.crypto.keyset import load_keyset
from simbdp.formats import ReadOptions, read_batches
ks = load_keyset(Path(sys.argv[2]), "acme")
rows = 0
for b in read_batches(Path(sys.argv[1]), ReadOptions("csv", "gzip" if sys.argv[1].endswith(
        ".gz.enc") else "none", decrypt=FileDecryptor(ks), block_bytes=1024**2)):
    rows += b.num_rows
# the peak of this process only (ru_maxrss would keep the parent's peak across fork + exec)
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0].split()[1]
print(rows, int(hwm) * 1024)
"""


def _peak(path: Path, keyset_path: Path) -> tuple[int, int]:
    out = subprocess.run([sys.executable, "-c", PEAK, str(path), str(keyset_path)],
                         check=True, capture_output=True, text=True).stdout.split()
    return int(out[0]), int(out[1])


@pytest.mark.slow
def test_memory_stays_flat_on_a_large_file(tmp_path, keyset):
    """A file of > 64 MiB plain text (some 90 segments of 1 MiB) needs no more memory than one
    of 37 MiB: the reader holds a few blocks and one segment, never the file. (Measured: about
    160 MiB for either, interpreter and pyarrow included; 176 MiB for a 275 MiB file.)"""
    keyset_path = tmp_path / "keys" / "k.json"
    sizes = {"medium": 280_000, "large": 700_000}
    peaks, plain = {}, {}
    for name, rows in sizes.items():
        src = write_reddit_csv(tmp_path / f"{name}.csv", rows)
        plain[name] = src.stat().st_size
        encrypt_file(keyset, src, tmp_path / f"{name}.csv.enc")
        src.unlink()
        n, peaks[name] = _peak(tmp_path / f"{name}.csv.enc", keyset_path)
        assert n == rows
    assert plain["large"] > 64 * 1024**2
    grown = plain["large"] - plain["medium"]  # about 55 MiB more plain text
    assert peaks["large"] - peaks["medium"] < grown * 0.6, (peaks, plain)
    assert peaks["large"] < 320 * 1024**2, peaks


@pytest.mark.parametrize("name", ["a.csv.gz.enc", "a.jsonl.zst.enc"])
def test_damage_under_a_decompressor_is_still_named(tmp_path, keyset, name):
    """The decryption error comes through the decompressor as itself, not as a corrupt gzip."""
    csv = write_reddit_csv(tmp_path / "a.csv", 60_000)
    data = csv.read_bytes()
    if "jsonl" in name:
        data = b"".join(json.dumps(r).encode() + b"\n" for r in pa.csv.read_csv(csv).to_pylist())
    src = tmp_path / name.removesuffix(".enc")
    # level 1: the compressed file still spans several segments
    src.write_bytes(gzip.compress(data, 1) if ".gz" in name else zstandard.compress(data, 1))
    enc = tmp_path / name
    encrypt_file(keyset, src, enc)
    blob = bytearray(enc.read_bytes())
    assert len(blob) > 2 * 1024**2
    blob[len(blob) - 1024**2 // 2] ^= 0x40
    enc.write_bytes(bytes(blob))
    with pytest.raises(Rejected) as e:
        _read(enc, keyset)
    assert e.value.code == "corrupt_encrypted" and name in str(e.value)
