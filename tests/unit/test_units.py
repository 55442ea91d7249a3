from simbdp.units import format_bytes, mib


def test_sizes_are_printed_in_binary_units():
    assert format_bytes(0) == "0 B"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(100 * 2**20) == "100 MiB"
    assert format_bytes(10 * 2**30) == "10 GiB"
    assert format_bytes(1023 * 2**20) == "1023 MiB"
    assert format_bytes(4 * 10**9) == "3.73 GiB"  # a "4GB" profile limit, said exactly
    assert mib(3 * 2**20) == 3.0
