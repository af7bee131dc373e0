"""
A synthetic detection dataset of coloured shapes, small enough to train a detector on a CPU in minutes.

Each image shows 1 to ``max_objects`` objects of four classes (circle, rectangle, triangle, star) over a textured
background. The longer side of an object's box is log-uniform between ``min_size`` pixels and ``max_size_frac`` of
the shorter image side, so COCO's small, medium and large area ranges are all represented. Objects are drawn in
order and later ones occlude earlier ones; an object left with less than ``min_visible`` of its area visible is
not drawn at all, so every drawn object is annotated. Boxes are the tight boxes of the visible pixels and
segmentations are the RLE of the visible pixels.

Generation is deterministic: image ``i`` of a split is drawn from ``numpy.random.default_rng([seed, i])``, so the
same arguments give byte-identical images and json.

Files under ``root``::

    {split}/000000.png, ...                 RGB images
    annotations/instances_{split}.json      COCO instances json
    annotations/manifest_{split}.json       what the split was generated with, to detect stale or broken caches

Registered datasets (:func:`register_shapes_datasets`, called when :mod:`dsla.data` is imported):
``shapes_train`` (3000 images, seed 0) and ``shapes_val`` (200 images, seed 1), 160x160 pixels. A split is
generated the first time its dataset is loaded, and again whenever its cache does not match its manifest.
"""
import argparse
import functools
import hashlib
import json
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import file_lock
from tqdm import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

__all__ = [
    "SHAPES_CLASSES",
    "ensure_shapes_dataset",
    "generate_shapes_dataset",
    "register_shapes_datasets",
    "render_shapes_image",
]

logger = logging.getLogger(__name__)

SHAPES_CLASSES = ("circle", "rectangle", "triangle", "star")

# Bump whenever the images or annotations for given arguments change, so that caches written by an older version
# no longer match their manifest and get regenerated.
SHAPES_GENERATOR_VERSION = 1

# split -> (default number of images, seed)
_SPLITS = {"train": (3000, 0), "val": (200, 1)}
_DEFAULT_IMAGE_SIZE = (160, 160)

# Fewer visible pixels than this cannot show which class an object is.
_MIN_VISIBLE_PIXELS = 16

# Well separated colours for untextured images: every pixel of an object then has one colour that no other object
# in the image and not the background has, which makes the annotations checkable from the pixels alone.
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

ImageSize = Union[int, Sequence[int]]


def _as_hw(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def _polygon(rng: np.random.Generator, name: str, size: float) -> np.ndarray:
    """
    Returns:
        ndarray[K, 2]: (x, y) vertices of a ``name`` shape whose axis-aligned box is centred on the origin and has
        longer side ``size``.
    """
    if name == "rectangle":
        aspect = rng.uniform(0.3, 1.0)
        pts = np.array([[-1.0, -aspect], [1.0, -aspect], [1.0, aspect], [-1.0, aspect]])
        # Half of the rectangles stay axis-aligned, the most frequent case in real scenes.
        angle = rng.uniform(0, np.pi) if rng.random() < 0.5 else rng.integers(2) * np.pi / 2
    elif name == "triangle":
        # Jittered around an equilateral triangle, so no triangle is so thin that it reads as a line.
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


def _shape_mask(rng: np.random.Generator, category: int, size: float, hw: Tuple[int, int]) -> np.ndarray:
    """
    Draws the full (unoccluded) mask of one object, placed uniformly where it fits in the image.
    Pixel (x, y) covers [x, x + 1) x [y, y + 1).
    """
    h, w = hw
    name = SHAPES_CLASSES[category]
    if name == "circle":
        radius = size / 2
        cx, cy = rng.uniform([radius, radius], [w - radius, h - radius])
        dx = np.arange(w) + 0.5 - cx
        dy = np.arange(h) + 0.5 - cy
        return dx[None, :] ** 2 + dy[:, None] ** 2 <= radius**2
    pts = _polygon(rng, name, size)
    half = pts.max(axis=0)
    center = rng.uniform(half, np.array([w, h]) - half)
    canvas = np.zeros((h, w), dtype=np.uint8)
    # OpenCV puts pixel centres on integer coordinates, ours are at +0.5; shift=4 keeps 1/16 pixel precision.
    vertices = np.round((pts + center - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [vertices], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def _visible_masks(masks: Sequence[np.ndarray], min_visible: float) -> List[Optional[np.ndarray]]:
    """
    Occludes each mask by the kept masks drawn after it. Decided from the top down, so that dropping an object
    only ever uncovers the objects below it, and the ones already kept stay valid.

    Returns:
        the visible mask of each object, or None for the objects too occluded to be drawn.
    """
    covered = np.zeros_like(masks[0])
    visible: List[Optional[np.ndarray]] = [None] * len(masks)
    for i in reversed(range(len(masks))):
        vis = masks[i] & ~covered
        area = int(vis.sum())
        if area >= _MIN_VISIBLE_PIXELS and area >= min_visible * masks[i].sum():
            visible[i] = vis
            covered |= masks[i]
    return visible


def _ramp(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A linear ramp from 0 to 1 over the given coordinates, along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    lo, hi = proj.min(), proj.max()
    return (proj - lo) / max(hi - lo, 1e-6)


def _background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """Float (H, W, 3) background: a two-colour gradient, low-frequency blotches and sometimes faint stripes."""
    h, w = xx.shape
    c0, c1 = rng.uniform(0, 255, (2, 3))
    image = c0 + (c1 - c0) * _ramp(rng, xx, yy)[..., None]
    grid = rng.normal(0, rng.uniform(5, 30), (rng.integers(2, 6), rng.integers(2, 6), 3))
    image += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 24)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        image += rng.uniform(4, 15) * np.sin(2 * np.pi * proj / period)[..., None]
    return image


def _contrasting_colour(rng: np.random.Generator, reference: np.ndarray, tries: int = 10) -> np.ndarray:
    """A random colour, re-drawn a few times if it is too close to ``reference`` to be seen against it."""
    best, best_dist = None, -1.0
    for _ in range(tries):
        colour = rng.uniform(0, 255, 3)
        dist = float(np.linalg.norm(colour - reference))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= 100:
            break
    return best


def _texture(rng: np.random.Generator, colour: np.ndarray, xx: np.ndarray, yy: np.ndarray, size: float):
    """Float (h, w, 3) fill of one object over its box: solid, stripes, gradient, checkerboard or noise."""
    kind = rng.choice(5, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    if kind == 0:
        return np.broadcast_to(colour, xx.shape + (3,))
    if kind == 4:
        return colour + rng.normal(0, rng.uniform(10, 35), xx.shape + (3,))
    # A second colour that keeps some of the first, so the object still reads as one object.
    mix = rng.uniform(0.4, 0.7)
    other = mix * colour + (1 - mix) * rng.uniform(0, 255, 3)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        half_period = rng.uniform(1.5, max(2.0, size / 4))
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        t = np.floor(proj / half_period) % 2
    elif kind == 2:
        t = _ramp(rng, xx, yy)
    else:
        cell = rng.uniform(2, max(3.0, size / 3))
        t = (np.floor(xx / cell) + np.floor(yy / cell)) % 2
    return colour + (other - colour) * t[..., None]


def _box_slices(mask: np.ndarray) -> Tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


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
        max_objects: objects per image are uniform in [1, max_objects], before dropping the occluded ones.
        min_size, max_size_frac: the longer side of an object's unoccluded box is log-uniform in
            [min_size, max_size_frac * min(height, width)].
        min_visible: objects with a smaller visible fraction of their area are not drawn.
        textured: False draws every object and the background in one flat colour, distinct within the image.
            The geometry (and thus the annotations) drawn from a given ``rng`` state do not depend on it.

    Returns:
        image: uint8 (H, W, 3) RGB.
        objects: the drawn objects in drawing order, dicts with "category" (index into :data:`SHAPES_CLASSES`),
            "mask" (bool (H, W), the visible pixels) and "full_mask" (bool (H, W), the object without occlusion).
    """
    hw = _as_hw(image_size)
    max_size = max_size_frac * min(hw)
    if not 0 < min_size <= max_size:
        raise ValueError(f"Need 0 < min_size <= max_size_frac * min(image_size), got {min_size} and {max_size}.")
    num = int(rng.integers(1, max_objects + 1))
    categories = rng.integers(len(SHAPES_CLASSES), size=num)
    sizes = np.exp(rng.uniform(math.log(min_size), math.log(max_size), num))
    masks = [_shape_mask(rng, int(c), float(s), hw) for c, s in zip(categories, sizes)]
    visible = _visible_masks(masks, min_visible)
    kept = [i for i in range(num) if visible[i] is not None]

    if textured:
        yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]].astype(np.float64)
        image = _background(rng, xx, yy)
        for i in kept:
            box = _box_slices(masks[i])
            # Judge contrast against what is under the object, lower objects included.
            colour = _contrasting_colour(rng, image[box].reshape(-1, 3).mean(axis=0))
            texture = _texture(rng, colour, xx[box], yy[box], float(sizes[i]))
            vis = visible[i][box]
            image[box][vis] = texture[vis]
        image += rng.normal(0, rng.uniform(0.5, 3), image.shape)
    else:
        colours = _FLAT_PALETTE[rng.choice(len(_FLAT_PALETTE), size=len(kept) + 1, replace=False)]
        image = np.empty(hw + (3,), dtype=np.float64)
        image[...] = colours[0]
        for i, colour in zip(kept, colours[1:]):
            image[visible[i]] = colour
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return image, [{"category": int(categories[i]), "mask": visible[i], "full_mask": masks[i]} for i in kept]


def _coco_annotation(mask: np.ndarray) -> Dict:
    rows, cols = _box_slices(mask)
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "bbox": [float(cols.start), float(rows.start), float(cols.stop - cols.start), float(rows.stop - rows.start)],
        "area": float(mask.sum()),
        "segmentation": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        "iscrowd": 0,
    }


def _paths(root: str, split: str) -> Tuple[str, str, str]:
    """image directory, json file and manifest of one split."""
    annotations = os.path.join(root, "annotations")
    return (
        os.path.join(root, split),
        os.path.join(annotations, f"instances_{split}.json"),
        os.path.join(annotations, f"manifest_{split}.json"),
    )


def _image_file_name(index: int) -> str:
    return f"{index:06d}.png"


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _generation_params(num_images, seed, image_size, **render_kwargs) -> Dict:
    # The manifest compares these to its stored copy, so they must survive a json round trip unchanged.
    params = {"num_images": int(num_images), "seed": int(seed), "image_size": list(_as_hw(image_size))}
    params.update(render_kwargs)
    return json.loads(json.dumps(params))


def generate_shapes_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    *,
    show_progress: bool = True,
    **render_kwargs,
) -> str:
    """
    Writes one split of the shapes dataset (see the module docstring for the layout), overwriting what is there.

    Args:
        root: dataset directory.
        split: name of the split, used for its image directory and json file names.
        num_images: number of images.
        seed: non-negative int; image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
        image_size: (height, width), or one int for square images.
        show_progress: show a tqdm progress bar on stderr.
        render_kwargs: passed to :func:`render_shapes_image`.

    Returns:
        str: path of the COCO instances json.
    """
    image_dir, json_file, manifest_file = _paths(root, split)
    params = _generation_params(num_images, seed, image_size, **render_kwargs)
    hw = _as_hw(image_size)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    # An interrupted run must not leave a manifest that vouches for a partial split.
    if os.path.exists(manifest_file):
        os.remove(manifest_file)
    logger.info(f"Generating {num_images} shapes images for split '{split}' into {image_dir} ...")

    images, annotations = [], []
    image_bytes = 0
    for index in tqdm(range(num_images), desc=f"shapes_{split}", unit="img", disable=not show_progress):
        image, objects = render_shapes_image(np.random.default_rng([seed, index]), hw, **render_kwargs)
        ok, png = cv2.imencode(".png", image[:, :, ::-1])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode image {index} of split '{split}' as PNG.")
        file_name = _image_file_name(index)
        with open(os.path.join(image_dir, file_name), "wb") as f:
            f.write(png.tobytes())
        image_bytes += png.size
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": hw[1], "height": hw[0]})
        for obj in objects:
            ann = {"id": len(annotations) + 1, "image_id": image_id, "category_id": obj["category"] + 1}
            ann.update(_coco_annotation(obj["mask"]))
            annotations.append(ann)

    coco = {
        "info": {"description": "DSLA synthetic shapes", "version": str(SHAPES_GENERATOR_VERSION)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(SHAPES_CLASSES)],
    }
    tmp_file = json_file + ".tmp"
    with open(tmp_file, "w") as f:
        json.dump(coco, f, separators=(",", ":"))
    os.replace(tmp_file, json_file)
    manifest = {
        "version": SHAPES_GENERATOR_VERSION,
        "params": params,
        "json_sha256": _sha256(json_file),
        "image_bytes": image_bytes,
    }
    with open(manifest_file, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    logger.info(f"Wrote {len(annotations)} annotations of split '{split}' to {json_file}.")
    return json_file


def _cache_problem(root: str, split: str, params: Dict) -> Optional[str]:
    """Why the cached split does not match ``params`` and the generator version, or None if it does."""
    image_dir, json_file, manifest_file = _paths(root, split)
    try:
        with open(manifest_file) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return "no readable manifest"
    if manifest.get("version") != SHAPES_GENERATOR_VERSION or manifest.get("params") != params:
        return "generated with other parameters or by another generator version"
    try:
        if _sha256(json_file) != manifest.get("json_sha256"):
            return "annotation json does not match its checksum"
        image_bytes = sum(
            os.path.getsize(os.path.join(image_dir, _image_file_name(i))) for i in range(params["num_images"])
        )
    except OSError as e:
        return f"missing file ({e})"
    if image_bytes != manifest.get("image_bytes"):
        return "image files do not have the sizes they were written with"
    return None


def ensure_shapes_dataset(
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: ImageSize = _DEFAULT_IMAGE_SIZE,
    **render_kwargs,
) -> str:
    """
    Like :func:`generate_shapes_dataset`, but reuses the split under ``root`` when its manifest shows that it was
    written with the same arguments and generator version and its files are intact. Safe to call from several
    processes at once: one generates while the others wait.

    Returns:
        str: path of the COCO instances json.
    """
    params = _generation_params(num_images, seed, image_size, **render_kwargs)
    _, json_file, manifest_file = _paths(root, split)
    with file_lock(manifest_file):
        problem = _cache_problem(root, split, params)
        if problem is not None:
            logger.info(f"(Re)generating shapes split '{split}' under {root}: {problem}.")
            generate_shapes_dataset(root, split, num_images, seed, image_size, **render_kwargs)
    return json_file


def _default_root() -> str:
    root = os.environ.get("DSLA_SHAPES_ROOT")
    if root:
        return root
    return os.path.join(os.environ.get("DETECTRON2_DATASETS", "datasets"), "dsla_shapes")


def _load_split(name: str, root: str, split: str, num_images: int, seed: int, image_size: Tuple[int, int]):
    json_file = ensure_shapes_dataset(root, split, num_images, seed, image_size)
    return load_coco_json(json_file, os.path.join(root, split), name)


def register_shapes_datasets(
    root: Optional[str] = None,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    image_size: Optional[ImageSize] = None,
) -> None:
    """
    Registers ``shapes_train`` and ``shapes_val`` in detectron2's catalogs. Nothing is generated here: a split is
    generated (or checked against its manifest and reused) when its dataset is loaded. Calling this again
    re-registers both datasets with the new arguments.

    Each argument left as None is read from an environment variable, else takes its default:

    * root: ``$DSLA_SHAPES_ROOT``, else ``$DETECTRON2_DATASETS/dsla_shapes``, else ``./datasets/dsla_shapes``.
    * num_train: ``$DSLA_SHAPES_NUM_TRAIN``, else 3000.
    * num_val: ``$DSLA_SHAPES_NUM_VAL``, else 200.
    * image_size: ``$DSLA_SHAPES_IMAGE_SIZE`` ("160" or "HxW"), else 160x160.
    """
    root = os.path.abspath(root or _default_root())
    if image_size is None:
        env_size = os.environ.get("DSLA_SHAPES_IMAGE_SIZE")
        image_size = tuple(int(v) for v in env_size.lower().split("x")) if env_size else _DEFAULT_IMAGE_SIZE
        if len(image_size) == 1:
            image_size = image_size * 2
    hw = _as_hw(image_size)
    num_images = {"train": num_train, "val": num_val}
    for split, (default, _) in _SPLITS.items():
        if num_images[split] is None:
            num_images[split] = int(os.environ.get(f"DSLA_SHAPES_NUM_{split.upper()}", default))
    for split, (_, seed) in _SPLITS.items():
        name = f"shapes_{split}"
        image_dir, json_file, _ = _paths(root, split)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(name, functools.partial(_load_split, name, root, split, num_images[split], seed, hw))
        MetadataCatalog.get(name).set(
            thing_classes=list(SHAPES_CLASSES),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
            json_file=json_file,
            image_root=image_dir,
            evaluator_type="coco",
        )


def main(argv: Optional[Sequence[str]] = None) -> str:
    parser = argparse.ArgumentParser(description="Write one split of the DSLA synthetic shapes dataset.")
    parser.add_argument("--root", required=True, help="dataset directory")
    parser.add_argument("--split", default="train", help="split name (default: train)")
    parser.add_argument("--num-images", type=int, help="default: 3000 for train, 200 for val, else required")
    parser.add_argument("--seed", type=int, help="default: 0 for train, 1 for val, else required")
    parser.add_argument("--image-size", type=int, nargs="+", default=list(_DEFAULT_IMAGE_SIZE), help="H [W]")
    parser.add_argument("--flat", action="store_true", help="untextured images in flat distinct colours")
    args = parser.parse_args(argv)
    num_images, seed = _SPLITS.get(args.split, (None, None))
    num_images = args.num_images if args.num_images is not None else num_images
    seed = args.seed if args.seed is not None else seed
    if num_images is None or seed is None:
        parser.error(f"--num-images and --seed are required for split '{args.split}'.")
    image_size = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    return generate_shapes_dataset(args.root, args.split, num_images, seed, image_size, textured=not args.flat)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    main()
