"""Print a table of shapes with their areas and perimeters."""

import sys

from shapes import circle_area, circle_perimeter, rectangle_area, rectangle_perimeter, to_unit


def report(unit: str = "m") -> list[str]:
    rows = []
    for r in (0.5, 1.0, 2.0):
        area, perim = circle_area(r), circle_perimeter(r)
        rows.append(f"circle r={r}: area={area:.3f} perimeter={to_unit(perim, unit):.3f}{unit}")
    for w, h in ((1.0, 2.0), (3.0, 4.0)):
        area, perim = rectangle_area(w, h), rectangle_perimeter(w, h)
        rows.append(f"rect {w}x{h}: area={area:.3f} perimeter={to_unit(perim, unit):.3f}{unit}")
    return rows


if __name__ == "__main__":
    print("\n".join(report(sys.argv[1] if len(sys.argv) > 1 else "m")))
