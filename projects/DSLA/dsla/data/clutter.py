"""
A second synthetic detection dataset, built to differ from :mod:`dsla.data.shapes` where detectors
differ: object scale, shape of the boxes, crowding and things that look like objects but are not.

* Two classes, ellipse and rectangle: the held-out set this project is judged on has two classes,
  and the shapes already cover a four-class problem. Both classes take every size and aspect ratio,
  so only the outline (round or cornered) tells them apart.
* 256x320 (height x width) images, the size of that held-out set, against the shapes' 160x160.
* Sizes: the longer side of an object's box is log-uniform from ``min_size`` (6) pixels to
  ``max_size_frac`` (0.95) of the shorter image side, so tiny objects of 6-12 pixels and objects
  covering most of the image both occur; half of the images also have one object of 35-100% of that
  largest size.
* Aspect ratios: log-uniform in [1, ``max_aspect``] (5), lying or standing, sometimes tilted by up
  to 15 degrees, so boxes range from 1:5 to 5:1 (tiny objects are kept at least 3 pixels thick).
* Crowding: up to three clusters of 3-12 objects of one class and similar size per image, side by
  side, end to end or piled, touching or overlapping; with the loose objects, up to ``max_objects``
  (30) per image.
* Clutter, never annotated: distractors of other kinds (triangles, crosses, irregular blobs, lines,
  and hollow rings and frames, which have the outline of an object but not its fill), some under the
  objects and some over them, and backgrounds with grids of tiles (bricks, windows) and faint
  object-like spots.

Objects are drawn from the largest to the smallest, with noise in the order; an object left with
less than ``min_visible`` of its area visible, or fewer than 10 visible pixels, is not drawn at all,
so every drawn object is annotated. Boxes are the tight boxes of the visible pixels and
segmentations are the RLE of the visible pixels.

Registered datasets (:func:`register_clutter_datasets`, called when :mod:`dsla.data` is imported):
``clutter_train`` (2000 images, seed 0) and ``clutter_val`` (200 images, seed 1). Generation, file
layout and caching are those of :mod:`dsla.data.synthetic` for the family :data:`CLUTTER` (e.g.
``generate_split(CLUTTER, root, "val", 200, seed=1)``); ``python -m dsla.data.clutter --help``
writes one split.
"""

import functools
import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .synthetic import (
    ImageSize,
    SyntheticFamily,
    as_hw,
    background,
    command_line,
    grey,
    paint_objects,
    polygon_mask,
    register_family,
    visible_masks,
)

__all__ = [
    "CLUTTER",
    "CLUTTER_CLASSES",
    "register_clutter_datasets",
    "render_clutter_image",
]

CLUTTER_CLASSES = ("ellipse", "rectangle")

_DEFAULT_IMAGE_SIZE = (256, 320)

# Tiny objects must stay thick enough to have an outline.
_MIN_SHORT_SIDE = 3.0
# A 6x3 ellipse has about 14 pixels; the outline of fewer than 10 does not show its class.
_MIN_VISIBLE_PIXELS = 10
_MAX_TILT = math.radians(15)

_DISTRACTORS = ("triangle", "cross", "blob", "ring", "frame", "line")
_DISTRACTOR_P = (0.15, 0.15, 0.2, 0.15, 0.15, 0.2)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _rotate(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _outline(kind: str, width: float, height: float) -> np.ndarray:
    """ndarray[K, 2]: (x, y) vertices of an axis-aligned ellipse or rectangle of the given box,
    centred on 0."""
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return np.stack([np.cos(t) * width / 2, np.sin(t) * height / 2], axis=1)
    return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * [width / 2, height / 2]


def _fit_box(pts: np.ndarray, long_side: float) -> np.ndarray:
    """Centres the box of the vertices on the origin and scales it to the given longer side."""
    pts = pts - (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts * (long_side / (pts.max(axis=0) - pts.min(axis=0)).max())


def _fit_center(pts: np.ndarray, hw: Tuple[int, int], center: np.ndarray) -> np.ndarray:
    """The point nearest to ``center`` that vertices centred on the origin can be moved to and lie
    in the image."""
    half = pts.max(axis=0)
    return np.clip(center, half, np.array([hw[1], hw[0]]) - half)


def _object_polygon(
    rng: np.random.Generator, kind: str, long_side: float, aspect: float
) -> np.ndarray:
    """An ellipse or rectangle lying or standing, sometimes tilted, with the given longer side of
    its box."""
    pts = _outline(kind, long_side, max(long_side / aspect, _MIN_SHORT_SIDE))
    if rng.random() < 0.5:
        pts = pts[:, ::-1]
    if rng.random() < 0.4:
        pts = _rotate(pts, rng.uniform(-_MAX_TILT, _MAX_TILT))
    return _fit_box(pts, long_side)


def _object_specs(
    rng, hw, max_objects, min_size, max_size, max_aspect
) -> List[Tuple[int, float, float, np.ndarray]]:
    """(category, longer side, aspect ratio, centre (x, y)) of the objects of one image: clusters,
    then loose ones."""
    h, w = hw
    specs = []
    for _ in range(rng.choice(4, p=[0.4, 0.3, 0.2, 0.1])):
        category = int(rng.integers(len(CLUTTER_CLASSES)))
        base_size = _log_uniform(rng, min_size, max(min_size, 0.4 * min(hw)))
        base_aspect = _log_uniform(rng, 1, max_aspect)
        count = int(rng.integers(3, 13))
        arrangement = rng.choice(3)  # side by side, end to end, piled
        long_axis = np.array([1.0, 0.0]) if rng.random() < 0.5 else np.array([0.0, 1.0])
        short_axis = long_axis[::-1]
        short = max(base_size / base_aspect, _MIN_SHORT_SIDE)
        # At most a little apart, so that neighbours touch or overlap.
        step = rng.uniform(0.6, 1.05) * (short if arrangement == 0 else base_size)
        center = rng.uniform([0, 0], [w, h])
        for j in range(count):
            offset = (j - (count - 1) / 2) * step
            if arrangement == 0:
                position = center + offset * short_axis + rng.normal(0, 0.1 * base_size) * long_axis
            elif arrangement == 1:
                position = center + offset * long_axis + rng.normal(0, 0.2 * short) * short_axis
            else:
                position = center + rng.normal(0, 0.25 * base_size * math.sqrt(count), 2)
            size = float(np.clip(base_size * rng.uniform(0.85, 1.15), min_size, max_size))
            aspect = float(np.clip(base_aspect * rng.uniform(0.85, 1.15), 1, max_aspect))
            specs.append((category, size, aspect, position))
    # Half of the images have one large object, which the log-uniform sizes alone would make rare.
    sizes = [rng.uniform(max(min_size, 0.35 * max_size), max_size)] if rng.random() < 0.5 else []
    sizes += [_log_uniform(rng, min_size, max_size) for _ in range(int(rng.integers(1, 9)))]
    for size in sizes:
        category = int(rng.integers(len(CLUTTER_CLASSES)))
        specs.append(
            (category, size, _log_uniform(rng, 1, max_aspect), rng.uniform([0, 0], [w, h]))
        )
    return specs[:max_objects]


def _distractor(
    rng: np.random.Generator, hw: Tuple[int, int], max_aspect: float
) -> Tuple[str, np.ndarray, float]:
    """Kind, full mask and size (longer side) of one unannotated distractor, placed uniformly in the
    image."""
    h, w = hw
    kind = _DISTRACTORS[rng.choice(len(_DISTRACTORS), p=_DISTRACTOR_P)]
    center = rng.uniform([0, 0], [w, h])
    if kind == "line":
        length = _log_uniform(rng, 16, max(hw))
        direction = _rotate(np.array([[length / 2, 0.0]]), rng.uniform(0, np.pi))[0]
        canvas = np.zeros(hw, dtype=np.uint8)
        ends = [
            tuple(int(v) for v in np.round((p - 0.5) * 16))
            for p in (center - direction, center + direction)
        ]
        cv2.line(canvas, ends[0], ends[1], 1, int(rng.integers(1, 4)), cv2.LINE_8, shift=4)
        return kind, canvas.astype(bool), length
    size = _log_uniform(rng, 12, 0.35 * min(hw))
    if kind in ("ring", "frame"):
        outer = _object_polygon(
            rng, "ellipse" if kind == "ring" else "rectangle", size, rng.uniform(1, max_aspect)
        )
        center = _fit_center(outer, hw, center)
        hole = outer * rng.uniform(0.55, 0.8)
        return kind, polygon_mask(outer + center, hw) & ~polygon_mask(hole + center, hw), size
    if kind == "triangle":
        angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.5, 0.5, 3)
        pts = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif kind == "cross":
        t = rng.uniform(0.2, 0.4)
        arm = np.array([[t, t], [t, 1], [-t, 1], [-t, t]])
        pts = np.concatenate([_rotate(arm, a) for a in np.arange(4) * np.pi / 2])
    else:
        # Lobed, so that even a round blob does not pass for an ellipse.
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = 1 + sum(
            rng.uniform(0.1, 0.3) * np.cos(k * angles + rng.uniform(0, 2 * np.pi))
            for k in range(2, 6)
        )
        pts = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    pts = _fit_box(_rotate(pts, rng.uniform(0, 2 * np.pi)), size)
    return kind, polygon_mask(pts + _fit_center(pts, hw, center), hw), size


def _clutter_background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """The shapes' background, sometimes with a grid of tiles and faint object-like spots on it."""
    image = background(rng, xx, yy)
    h, w = xx.shape
    if rng.random() < 0.35:
        cell_w = rng.uniform(8, 48)
        cell_h = cell_w * _log_uniform(rng, 1 / 3, 3)
        y, x = yy[:, 0], xx[0]
        row = np.floor(y / cell_h).astype(np.int32)
        # Half of the grids are laid like bricks, odd rows shifted by half a tile.
        x = x + (row[:, None] % 2) * np.float32(cell_w / 2 if rng.random() < 0.5 else 0.0)
        col = np.floor(x / cell_w)
        x_in_tile = x - col * np.float32(cell_w)
        col = col.astype(np.int32)
        tiles = rng.normal(0, rng.uniform(5, 20), ((row[-1] + 1) * (col.max() + 1), 3)).astype(
            image.dtype
        )
        image += np.take(tiles, row[:, None] * (col.max() + 1) + col, axis=0)
        joints = (x_in_tile < rng.uniform(1, 3)) | (
            y - row * np.float32(cell_h) < rng.uniform(1, 3)
        )[:, None]
        cv2.subtract(image, (rng.uniform(15, 40),) * 3, dst=image, mask=joints.astype(np.uint8))
    if rng.random() < 0.5:
        spots = np.zeros_like(image)
        where = np.zeros((h, w), dtype=np.uint8)
        for _ in range(int(rng.integers(5, 30))):
            center = tuple(int(v) for v in rng.uniform([0, 0], [w, h]))
            axes = tuple(int(v) for v in rng.integers(2, 20, 2))
            cv2.ellipse(
                spots,
                center,
                axes,
                0.0,
                0.0,
                360.0,
                tuple(float(v) for v in rng.uniform(0, 255, 3)),
                -1,
            )
            cv2.ellipse(where, center, axes, 0.0, 0.0, 360.0, 1, -1)
        alpha = rng.uniform(0.15, 0.35)
        np.copyto(
            image,
            cv2.addWeighted(image, 1 - alpha, spots, alpha, 0),
            where=where.astype(bool)[..., None],
        )
    return image


@functools.lru_cache(maxsize=4)
def _pixel_grid(hw: Tuple[int, int]) -> np.ndarray:
    """float32 [2, H, W]: the y and x coordinates of the pixels, made once per size and read
    only."""
    grid = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float32)
    grid.flags.writeable = False
    return grid


def render_clutter_image(
    rng: np.random.Generator,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    *,
    max_objects: int = 30,
    min_size: float = 6.0,
    max_size_frac: float = 0.95,
    max_aspect: float = 5.0,
    max_distractors: int = 10,
    min_visible: float = 0.4,
) -> Tuple[np.ndarray, List[Dict]]:
    """
    Draws one image of the clutter dataset.

    Args:
        rng: the only source of randomness.
        image_size: (height, width), or one int for square images.
        max_objects: at most this many objects per image, before dropping the occluded ones.
        min_size, max_size_frac: the longer side of an object's unoccluded box is at least
            ``min_size`` and at most ``max_size_frac * min(height, width)``.
        max_aspect: the longer side of an object is 1 to ``max_aspect`` times its shorter side.
        max_distractors: unannotated distractors per image are uniform in [0, max_distractors].
        min_visible: objects with a smaller visible fraction of their area are not drawn.

    Returns:
        image: uint8 (H, W, 3) RGB.
        objects: everything drawn, in drawing order: dicts with "category" (index into
            :data:`CLUTTER_CLASSES`, None for a distractor), "mask" (bool (H, W), the visible
            pixels) and "full_mask" (bool (H, W), the object without occlusion).
    """
    hw = as_hw(image_size)
    max_size = max_size_frac * min(hw)
    if not _MIN_SHORT_SIDE <= min_size <= max_size:
        raise ValueError(
            f"Need {_MIN_SHORT_SIDE} <= min_size <= max_size_frac * min(image_size), got "
            f"{min_size}."
        )
    specs = _object_specs(rng, hw, max_objects, min_size, max_size, max_aspect)
    # Larger objects lower down, as in a scene where small things lie on large ones, but not
    # strictly.
    order = np.argsort(
        [-math.log(size) + rng.normal(0, 0.7) for _, size, _, _ in specs], kind="stable"
    )
    layers = []
    for i in order:
        category, size, aspect, center = specs[i]
        pts = _object_polygon(rng, CLUTTER_CLASSES[category], size, aspect)
        layers.append((category, polygon_mask(pts + _fit_center(pts, hw, center), hw), size))
    for _ in range(int(rng.integers(0, max_distractors + 1))):
        kind, mask, size = _distractor(rng, hw, max_aspect)
        # Half of the lines (wires over the scene) and a quarter of the other distractors lie over
        # the objects.
        if rng.random() < (0.5 if kind == "line" else 0.25):
            layers.append((None, mask, size))
        else:
            layers.insert(0, (None, mask, size))
    visible = visible_masks(
        [mask for _, mask, _ in layers],
        min_visible,
        _MIN_VISIBLE_PIXELS,
        [c is not None for c, _, _ in layers],
    )
    kept = [i for i, vis in enumerate(visible) if vis is not None and vis.any()]

    yy, xx = _pixel_grid(hw)
    image = _clutter_background(rng, xx, yy)
    paint_objects(rng, image, [(layers[i][1], visible[i], layers[i][2]) for i in kept], xx, yy)
    image += grey(rng.uniform(0.5, 3) * rng.standard_normal(hw, dtype=np.float32))
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, [
        {"category": layers[i][0], "mask": visible[i], "full_mask": layers[i][1]} for i in kept
    ]


# Bump the version whenever the images or annotations for given arguments change (see
# SyntheticFamily).
CLUTTER = SyntheticFamily(
    name="clutter",
    classes=CLUTTER_CLASSES,
    render=render_clutter_image,
    version=1,
    image_size=_DEFAULT_IMAGE_SIZE,
    splits={"train": (2000, 0), "val": (200, 1)},
)


def register_clutter_datasets(
    root: Optional[str] = None,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    image_size: Optional[ImageSize] = None,
) -> None:
    """
    Registers ``clutter_train`` and ``clutter_val`` (see
    :func:`dsla.data.synthetic.register_family`). Arguments left as None are read from
    ``$DSLA_CLUTTER_ROOT``, ``$DSLA_CLUTTER_NUM_TRAIN``, ``$DSLA_CLUTTER_NUM_VAL`` and
    ``$DSLA_CLUTTER_IMAGE_SIZE`` ("HxW"), else default to ``$DETECTRON2_DATASETS/dsla_clutter`` (or
    ``./datasets/dsla_clutter``), 2000, 200 and 256x320.
    """
    register_family(CLUTTER, root, num_train, num_val, image_size)


def main(argv: Optional[Sequence[str]] = None) -> str:
    return command_line(CLUTTER, argv)


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    main()
