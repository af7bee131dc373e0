"""
A synthetic detection dataset of coloured shapes, small enough to train a detector on a CPU in
minutes.

Each image shows 1 to ``max_objects`` objects of four classes (circle, rectangle, triangle, star)
over a textured background. The longer side of an object's box is log-uniform between ``min_size``
pixels and ``max_size_frac`` of the shorter image side, so COCO's small, medium and large area
ranges are all represented. Objects are drawn in order and later ones occlude earlier ones; an
object left with less than ``min_visible`` of its area visible is not drawn at all, so every drawn
object is annotated. Boxes are the tight boxes of the visible pixels and segmentations are the RLE
of the visible pixels.

Registered datasets (:func:`register_shapes_datasets`, called when :mod:`dsla.data` is imported):
``shapes_train`` (3000 images, seed 0) and ``shapes_val`` (200 images, seed 1), 160x160 pixels.
Generation, file layout and caching are those of :mod:`dsla.data.synthetic`.
"""

import logging
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .synthetic import (
    ImageSize,
    SyntheticFamily,
    as_hw,
    background,
    command_line,
    ensure_split,
    generate_split,
    paint_objects,
    polygon_mask,
    register_family,
    visible_masks,
)

__all__ = [
    "SHAPES",
    "SHAPES_CLASSES",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "render_shapes_image",
]

SHAPES_CLASSES = ("circle", "rectangle", "triangle", "star")

_DEFAULT_IMAGE_SIZE = (160, 160)

# Fewer visible pixels than this cannot show which class an object is.
_MIN_VISIBLE_PIXELS = 16

# Well separated colours for untextured images: every pixel of an object then has one colour that no
# other object in the image and not the background has, which makes the annotations checkable from
# the pixels alone.
_FLAT_PALETTE = np.array(
    [
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [128, 0, 0],
        [0, 0, 128],
        [128, 128, 0],
        [255, 255, 255],
        [0, 0, 0],
        [128, 128, 128],
    ],
    dtype=np.float64,
)


def _polygon(rng: np.random.Generator, name: str, size: float) -> np.ndarray:
    """
    Returns:
        ndarray[K, 2]: (x, y) vertices of a ``name`` shape whose axis-aligned box is centred on the
        origin and has longer side ``size``.
    """
    if name == "rectangle":
        aspect = rng.uniform(0.3, 1.0)
        pts = np.array([[-1.0, -aspect], [1.0, -aspect], [1.0, aspect], [-1.0, aspect]])
        # Half of the rectangles stay axis-aligned, the most frequent case in real scenes.
        angle = rng.uniform(0, np.pi) if rng.random() < 0.5 else rng.integers(2) * np.pi / 2
    elif name == "triangle":
        # Jittered around an equilateral triangle, so no triangle is so thin that it reads as a
        # line.
        angles = np.arange(3) * 2 * np.pi / 3 + rng.uniform(-0.35, 0.35, 3)
        pts = rng.uniform(0.7, 1.0, 3)[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        angle = rng.uniform(0, 2 * np.pi)
    elif name == "star":
        radii = np.tile([1.0, rng.uniform(0.4, 0.55)], 5)
        angles = np.arange(10) * np.pi / 5
        pts = radii[:, None] * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        angle = rng.uniform(0, 2 * np.pi)
    else:
        raise ValueError(f"No polygon for shape '{name}'.")
    c, s = math.cos(angle), math.sin(angle)
    pts = pts @ np.array([[c, s], [-s, c]])
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts * (size / (pts.max(axis=0) - pts.min(axis=0)).max())


def _shape_mask(
    rng: np.random.Generator, category: int, size: float, hw: Tuple[int, int]
) -> np.ndarray:
    """Draws the full (unoccluded) mask of one object, placed uniformly where it fits in the
    image."""
    h, w = hw
    name = SHAPES_CLASSES[category]
    if name == "circle":
        radius = size / 2
        cx, cy = rng.uniform([radius, radius], [w - radius, h - radius])
        # Pixel (x, y) covers [x, x + 1) x [y, y + 1).
        dx = np.arange(w) + 0.5 - cx
        dy = np.arange(h) + 0.5 - cy
        return dx[None, :] ** 2 + dy[:, None] ** 2 <= radius**2
    pts = _polygon(rng, name, size)
    half = pts.max(axis=0)
    center = rng.uniform(half, np.array([w, h]) - half)
    return polygon_mask(pts + center, hw)


def render_shapes_image(
    rng: np.random.Generator,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    *,
    max_objects: int = 8,
    min_size: float = 8.0,
    max_size_frac: float = 0.9,
    min_visible: float = 0.4,
    textured: bool = True,
) -> Tuple[np.ndarray, List[Dict]]:
    """
    Draws one image of the shapes dataset.

    Args:
        rng: the only source of randomness.
        image_size: (height, width), or one int for square images.
        max_objects: objects per image are uniform in [1, max_objects], before dropping the occluded
            ones.
        min_size, max_size_frac: the longer side of an object's unoccluded box is log-uniform in
            [min_size, max_size_frac * min(height, width)].
        min_visible: objects with a smaller visible fraction of their area are not drawn.
        textured: False draws every object and the background in one flat colour, distinct within
            the image. The geometry (and thus the annotations) drawn from a given ``rng`` state do
            not depend on it.

    Returns:
        image: uint8 (H, W, 3) RGB.
        objects: the drawn objects in drawing order, dicts with "category" (index into
            :data:`SHAPES_CLASSES`), "mask" (bool (H, W), the visible pixels) and "full_mask" (bool
            (H, W), the object without occlusion).
    """
    hw = as_hw(image_size)
    max_size = max_size_frac * min(hw)
    if not 0 < min_size <= max_size:
        raise ValueError(
            f"Need 0 < min_size <= max_size_frac * min(image_size), got {min_size} and {max_size}."
        )
    num = int(rng.integers(1, max_objects + 1))
    categories = rng.integers(len(SHAPES_CLASSES), size=num)
    sizes = np.exp(rng.uniform(math.log(min_size), math.log(max_size), num))
    masks = [_shape_mask(rng, int(c), float(s), hw) for c, s in zip(categories, sizes)]
    visible = visible_masks(masks, min_visible, _MIN_VISIBLE_PIXELS)
    kept = [i for i in range(num) if visible[i] is not None]

    if textured:
        yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
        image = background(rng, xx, yy)
        paint_objects(rng, image, [(masks[i], visible[i], float(sizes[i])) for i in kept], xx, yy)
        image += rng.normal(0, rng.uniform(0.5, 3), image.shape)
    else:
        colours = _FLAT_PALETTE[rng.choice(len(_FLAT_PALETTE), size=len(kept) + 1, replace=False)]
        image = np.empty(hw + (3,), dtype=np.float64)
        image[...] = colours[0]
        for i, colour in zip(kept, colours[1:]):
            image[visible[i]] = colour
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, [
        {"category": int(categories[i]), "mask": visible[i], "full_mask": masks[i]} for i in kept
    ]


# Bump the version whenever the images or annotations for given arguments change (see
# SyntheticFamily).
SHAPES = SyntheticFamily(
    name="shapes",
    classes=SHAPES_CLASSES,
    render=render_shapes_image,
    version=1,
    image_size=_DEFAULT_IMAGE_SIZE,
    splits={"train": (3000, 0), "val": (200, 1)},
)


def generate_shapes_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    **kwargs,
) -> str:
    """
    :func:`dsla.data.synthetic.generate_split` of the shapes: ``show_progress`` and the arguments of
    :func:`render_shapes_image`.
    """
    return generate_split(SHAPES, root, split, num_images, seed, image_size, **kwargs)


def ensure_shapes_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    **render_kwargs,
) -> str:
    """:func:`dsla.data.synthetic.ensure_split` of the shapes: generates the split unless its cache
    is valid."""
    return ensure_split(SHAPES, root, split, num_images, seed, image_size, **render_kwargs)


def register_shapes_datasets(
    root: Optional[str] = None,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    image_size: Optional[ImageSize] = None,
) -> None:
    """
    Registers ``shapes_train`` and ``shapes_val`` (see :func:`dsla.data.synthetic.register_family`).
    Arguments left as None are read from ``$DSLA_SHAPES_ROOT``, ``$DSLA_SHAPES_NUM_TRAIN``,
    ``$DSLA_SHAPES_NUM_VAL`` and ``$DSLA_SHAPES_IMAGE_SIZE`` ("160" or "HxW"), else default to
    ``$DETECTRON2_DATASETS/dsla_shapes`` (or ``./datasets/dsla_shapes``), 3000, 200 and 160x160.
    """
    register_family(SHAPES, root, num_train, num_val, image_size)


def _add_arguments(parser):
    parser.add_argument(
        "--flat", action="store_true", help="untextured images in flat distinct colours"
    )


def main(argv: Optional[Sequence[str]] = None) -> str:
    return command_line(SHAPES, argv, _add_arguments, lambda args: {"textured": not args.flat})


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s"
    )
    main()
