"""Areas and perimeters of plane shapes."""

import math


def circle_area(r: float) -> float:
    """Return the area of a circle of radius r."""
    return math.pi * r**2


def rectangle_area(w: float, h: float) -> float:
    """Return the area of a w by h rectangle."""
    return w * h


def rectangle_perimeter(w: float, h: float) -> float:
    """Return the perimeter of a w by h rectangle."""
    return 2 * (w + h)


def circle_perimeter(r: float) -> float:
    """Return the perimeter of a circle of radius r."""
    return 
