import pytest

from shapes.units import to_unit


def test_metres_to_centimetres():
    assert to_unit(1.0, "cm") == pytest.approx(100.0)


def test_unknown_unit():
    with pytest.raises(ValueError):
        to_unit(1.0, "parsec")
