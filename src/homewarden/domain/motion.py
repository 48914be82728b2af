"""Motion sensing math: pure numpy on small grayscale frames.

INTERFACE FILE — bodies are being implemented (helper: domain-motion). Signatures are fixed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

Polygon = Sequence[tuple[float, float]]
GrayFrame = NDArray[np.uint8]  # HxW uint8 luma


@dataclass(frozen=True, slots=True)
class MotionParams:
    """threshold: per-pixel luma change 0-255; min_area: fraction of unmasked pixels that must
    change; alpha: background learning rate per sample (0-1]."""

    threshold: int = 30
    min_area: float = 0.002
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class MotionResult:
    """score: fraction of unmasked pixels changed (0..1); moving: score >= min_area;
    zones: names of zones containing changed pixels; bbox: normalised (x0, y0, x1, y1) of the
    changed pixels or None."""

    score: float
    moving: bool
    zones: frozenset[str]
    bbox: tuple[float, float, float, float] | None


def polygon_mask(polygons: Sequence[Polygon], height: int, width: int) -> NDArray[np.bool_]:
    """Rasterise normalised polygons into an HxW boolean mask (True inside any polygon)."""
    raise NotImplementedError


class MotionDetector:
    """Compares each HxW uint8 gray frame against a running background."""

    def __init__(
        self,
        params: MotionParams,
        height: int,
        width: int,
        masks: Sequence[Polygon] = (),
        zones: Mapping[str, Polygon] | None = None,
    ) -> None:
        raise NotImplementedError

    def update(self, gray: GrayFrame) -> MotionResult:
        """Measure ``gray`` against the background, then fold it into the background."""
        raise NotImplementedError

    def peek(self, gray: GrayFrame) -> MotionResult:
        """Measure ``gray`` against the background without changing it."""
        raise NotImplementedError
