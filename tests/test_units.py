import pytest

from autocompress.units import UnitError, parse_energy, parse_size, parse_time


@pytest.mark.parametrize("text, expected", [
    ("4MB", 4_000_000), ("4MiB", 4 * 2**20), ("4000KB", 4_000_000), ("4e6", 4_000_000),
    ("4 mb", 4_000_000), ("1.5GB", 1_500_000_000), ("512KiB", 512 * 1024), ("100", 100),
])
def test_parse_size_accepts_both_bases(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["4 bananas", "MB", "", "-4MB", "4M B", "0MB"])
def test_parse_size_rejects_with_the_accepted_forms(text):
    with pytest.raises(UnitError, match="MB|positive"):
        parse_size(text)


def test_parse_time_and_energy():
    assert parse_time("30ms") == pytest.approx(0.03)
    assert parse_time("2s") == 2.0
    assert parse_energy("50mJ") == pytest.approx(0.05)
    with pytest.raises(UnitError):
        parse_time("30 parsecs")
