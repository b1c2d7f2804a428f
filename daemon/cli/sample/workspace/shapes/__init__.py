"""Plane geometry helpers."""

from .geometry import circle_area, circle_perimeter, rectangle_area, rectangle_perimeter
from .units import to_unit

__all__ = ["circle_area", "circle_perimeter", "rectangle_area", "rectangle_perimeter", "to_unit"]
