"""Length units and conversion between them."""

FACTORS = {"mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048}


def to_unit(value_m: float, unit: str) -> float:
    """Convert a length in metres to `unit`."""
    if unit not in FACTORS:
        raise ValueError(f"unknown unit {unit!r}; expected one of {sorted(FACTORS)}")
    return value_m / FACTORS[unit]
