"""Optional person detectors behind one small interface: ``detect(frame_bgr) -> detections``.

* :class:`PersonDetector` runs the SSDLite-MobileNetV2 person graph (see
  :mod:`homewarden.detect.models`) with OpenCV's DNN module.
* :class:`HogPersonDetector` is the no-download fallback: OpenCV's HOG + linear SVM people
  detector (Dalal & Triggs 2005, ``cv2.HOGDescriptor.getDefaultPeopleDetector``). It is slower
  and misses people smaller than its 64x128 window, so frames are upscaled when small.

:func:`load_person_detector` picks the DNN when its model is cached and says why not otherwise.
Frames are ``HxWx3`` uint8 BGR (OpenCV order); boxes are normalised ``(x0, y0, x1, y1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
from numpy.typing import NDArray

from homewarden.detect.models import find_person_model, person_model_config
from homewarden.errors import InvalidRequestError, ModelUnavailableError

BgrFrame = NDArray[np.uint8]  # HxWx3 uint8, BGR

#: Frigate's documented default ``min_score`` for tracked objects (``objects.filters``).
DEFAULT_MIN_SCORE = 0.5


@dataclass(frozen=True, slots=True)
class Detection:
    """One person found in a frame.

    score: confidence 0..1 (the DNN's sigmoid output; for HOG a squashed SVM margin).
    box: normalised ``(x0, y0, x1, y1)``, 0..1 of the frame's width and height.
    """

    score: float
    box: tuple[float, float, float, float]


class PersonDetecting(Protocol):
    """What the recorder needs from a person detector."""

    name: str

    def detect(self, frame_bgr: BgrFrame) -> list[Detection]:
        """People in ``frame_bgr`` (HxWx3 uint8 BGR), best first."""
        ...


def _check_frame(frame_bgr: BgrFrame) -> None:
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
        raise InvalidRequestError(
            f"person detection needs an HxWx3 uint8 BGR frame, got {frame_bgr.shape} "
            f"{frame_bgr.dtype}"
        )
    if frame_bgr.shape[0] < 2 or frame_bgr.shape[1] < 2:
        raise InvalidRequestError(f"frame too small for person detection: {frame_bgr.shape}")


def _clip01(v: float) -> float:
    return min(1.0, max(0.0, v))


class PersonDetector:
    """SSDLite-MobileNetV2 person graph run by ``cv2.dnn`` (OpenCV CPU backend).

    The frame is squashed to the graph's 300x300 input (as the TF Object Detection API's
    ``fixed_shape_resizer`` does in training), converted to RGB and scaled to -1..1 (the
    graph's own ``Preprocessor``: ``x * 2/255 - 1``). Cost per 640x360 frame on the 2-core
    build machine (busy with other work, load ~1.5-2): 42-50 ms of CPU on one thread, 30-45 ms
    wall with OpenCV's 2 threads (``tests/detect/test_person.py`` prints it). Every frame
    becomes 300x300, so the cost hardly depends on the frame size.

    Raises :class:`ModelUnavailableError` when OpenCV cannot load ``graph``/``config``.
    """

    name = "ssdlite"
    input_size = 300

    def __init__(
        self, graph: Path, config: Path | None = None, *, min_score: float = DEFAULT_MIN_SCORE
    ) -> None:
        config = config or person_model_config(graph)
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
        except cv2.error as exc:
            raise ModelUnavailableError(
                f"OpenCV {cv2.__version__} cannot load {graph} with {config}: "
                f"{str(exc).strip().splitlines()[-1]}"
            ) from exc
        self._net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self._net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.min_score = min_score

    def detect(self, frame_bgr: BgrFrame) -> list[Detection]:
        """People in ``frame_bgr`` (HxWx3 uint8 BGR) scoring at least ``min_score``, best first.

        Raises :class:`InvalidRequestError` for a frame of the wrong shape or type.
        """
        _check_frame(frame_bgr)
        size = self.input_size
        blob = cv2.dnn.blobFromImage(
            frame_bgr, 1.0 / 127.5, (size, size), (127.5, 127.5, 127.5), swapRB=True, crop=False
        )
        self._net.setInput(blob)
        out = np.asarray(self._net.forward())  # 1x1xNx7: image, class, score, x0, y0, x1, y1
        found = []
        for _, label, score, x0, y0, x1, y1 in out.reshape(-1, 7):
            if int(label) != 1 or score < self.min_score:
                continue
            box = (_clip01(x0), _clip01(y0), _clip01(x1), _clip01(y1))
            if box[2] > box[0] and box[3] > box[1]:
                found.append(Detection(float(score), box))
        found.sort(key=lambda d: d.score, reverse=True)
        return found


class HogPersonDetector:
    """OpenCV's HOG people detector (Dalal & Triggs), the fallback that needs no download.

    Frames narrower than ``min_width`` are upscaled first: the detector's window is 64x128 px,
    so a person must be about 100 px tall in the analysed image. ``detectMultiScale`` runs
    with an 8x8 stride and a 1.05 scale step (as OpenCV's ``peopledetect.py`` sample does).
    The SVM margin ``w`` is reported as ``score = 1 / (1 + exp(-w))``: a margin of 0 (the SVM's
    own decision boundary) maps to 0.5, so ``min_score`` 0.5 keeps every hit the SVM accepts —
    the score is not a calibrated probability. Cost per 640x360 frame on the same machine:
    120-130 ms of CPU, 60-110 ms wall with 2 threads — 2-3x the DNN, and it finds fewer people.
    """

    name = "hog"

    def __init__(self, *, min_score: float = DEFAULT_MIN_SCORE, min_width: int = 640) -> None:
        self._hog = cv2.HOGDescriptor()
        people = np.asarray(cv2.HOGDescriptor.getDefaultPeopleDetector(), dtype=np.float32)
        self._hog.setSVMDetector(people)
        self.min_score = min_score
        self.min_width = min_width

    def detect(self, frame_bgr: BgrFrame) -> list[Detection]:
        """People in ``frame_bgr`` (HxWx3 uint8 BGR) scoring at least ``min_score``, best first.

        Raises :class:`InvalidRequestError` for a frame of the wrong shape or type.
        """
        _check_frame(frame_bgr)
        h, w = frame_bgr.shape[:2]
        image = frame_bgr
        if w < self.min_width:
            size = (self.min_width, round(h * self.min_width / w))
            image = np.asarray(cv2.resize(frame_bgr, size), dtype=np.uint8)
        ih, iw = image.shape[:2]
        rects, weights = self._hog.detectMultiScale(
            image, hitThreshold=0.0, winStride=(8, 8), padding=(8, 8), scale=1.05
        )
        found = []
        for (x, y, rw, rh), weight in zip(rects, np.asarray(weights).reshape(-1), strict=True):
            score = 1.0 / (1.0 + math.exp(-float(weight)))
            if score < self.min_score:
                continue
            x0, y0 = _clip01(x / iw), _clip01(y / ih)
            x1, y1 = _clip01((x + rw) / iw), _clip01((y + rh) / ih)
            found.append(Detection(score, (x0, y0, x1, y1)))
        found.sort(key=lambda d: d.score, reverse=True)
        return found


def load_person_detector(
    cache_dir: Path, *, min_score: float = DEFAULT_MIN_SCORE
) -> tuple[PersonDetecting, str]:
    """The best available person detector and a sentence saying which and why.

    ``cache_dir`` is the directory given to :func:`~homewarden.detect.models.fetch_person_model`
    (the CLI uses ``settings.cache_dir / "models"``). With the SSDLite graph cached there this
    returns a :class:`PersonDetector`; otherwise — model not fetched, or OpenCV cannot load
    it — a :class:`HogPersonDetector` and the reason the DNN is off. Never raises for a
    missing or broken model.
    """
    graph = find_person_model(cache_dir)
    if graph is None:
        return HogPersonDetector(min_score=min_score), (
            f"SSDLite person model not found in {cache_dir} (run `homewarden models fetch`); "
            "using OpenCV's HOG people detector"
        )
    try:
        detector = PersonDetector(graph, min_score=min_score)
    except ModelUnavailableError as exc:
        return HogPersonDetector(min_score=min_score), (
            f"SSDLite person model unusable ({exc}); using OpenCV's HOG people detector"
        )
    return detector, f"SSDLite-MobileNetV2 person model from {graph}"
