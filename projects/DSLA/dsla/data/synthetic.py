"""
What the synthetic dataset families (:mod:`dsla.data.shapes`, :mod:`dsla.data.clutter`) have in
common: drawing helpers (backgrounds, object textures, occlusion), and one writer, cache and
registration for a family described by a :class:`SyntheticFamily`.

A family renders one image from ``numpy.random.default_rng([seed, i])``, so the same arguments give
byte-identical images and json. Files under a family's ``root``::

    {split}/000000.png, ...                 RGB images
    annotations/instances_{split}.json      COCO instances json
    annotations/manifest_{split}.json       what the split was generated with, to detect stale or
    broken caches

Datasets ``{name}_train`` and ``{name}_val`` are registered without generating anything; a split is
generated the first time its dataset is loaded, and again whenever its cache does not match its
manifest.
"""

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
from iopath.common.file_io import file_lock
from tqdm import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..utils.file_io import atomic_write_text

__all__ = [
    "SyntheticFamily",
    "ensure_split",
    "generate_split",
    "register_family",
    "command_line",
]

logger = logging.getLogger(__name__)

ImageSize = Union[int, Sequence[int]]


@dataclasses.dataclass(frozen=True)
class SyntheticFamily:
    """
    One family of synthetic datasets.

    Attributes:
        name: prefix of the dataset names (``{name}_train``), of the environment variables
            (``DSLA_{NAME}_ROOT``) and of the default directory (``datasets/dsla_{name}``).
        classes: class names; category ids in the json are 1..len(classes).
        render: ``render(rng, (height, width), **render_kwargs) -> (image, objects)``: a uint8 (H,
            W, 3) RGB image and its objects, dicts with "category" (index into ``classes``, or None
            for a distractor, which is drawn but not annotated) and "mask" (bool (H, W), the visible
            pixels).
        version: bump whenever the images or annotations for given arguments change, so that caches
            written by an older version no longer match their manifest and get regenerated.
        image_size: default (height, width).
        splits: split name -> (default number of images, seed) of the registered datasets.
    """

    name: str
    classes: Tuple[str, ...]
    render: Callable
    version: int
    image_size: Tuple[int, int]
    splits: Dict[str, Tuple[int, int]]


def as_hw(image_size: ImageSize) -> Tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def polygon_mask(vertices: np.ndarray, hw: Tuple[int, int]) -> np.ndarray:
    """
    Rasterizes a polygon given by (x, y) vertices in pixel coordinates, where pixel (x, y) covers
    [x, x + 1) x [y, y + 1).

    Returns:
        bool (H, W)
    """
    canvas = np.zeros(hw, dtype=np.uint8)
    # OpenCV puts pixel centres on integer coordinates, ours are at +0.5; shift=4 keeps 1/16 pixel
    # precision.
    points = np.round((vertices - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(canvas, [points], 1, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def visible_masks(
    masks: Sequence[np.ndarray],
    min_visible: float,
    min_pixels: int = 16,
    annotated: Optional[Sequence[bool]] = None,
) -> List[Optional[np.ndarray]]:
    """
    Occludes each mask (in drawing order, later on top) by the kept masks drawn after it. Decided
    from the top down, so that dropping an object only ever uncovers the objects below it, and the
    ones already kept stay valid.

    Args:
        min_visible, min_pixels: an annotated object with a smaller visible fraction of its area, or
            fewer visible pixels, is dropped: too little of it shows to tell what it is.
        annotated: per mask, False for unannotated distractors, which are never dropped. Default:
            all True.

    Returns:
        the visible mask of each object, or None for the objects that are dropped (and must not be
        drawn).
    """
    covered = np.zeros_like(masks[0])
    visible: List[Optional[np.ndarray]] = [None] * len(masks)
    for i in reversed(range(len(masks))):
        vis = masks[i] & ~covered
        area = np.count_nonzero(vis)
        if (annotated is not None and not annotated[i]) or (
            area >= min_pixels and area >= min_visible * np.count_nonzero(masks[i])
        ):
            visible[i] = vis
            covered |= masks[i]
    return visible


def ramp(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A linear ramp from 0 to 1 over the given coordinates, along a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    proj = xx * math.cos(angle) + yy * math.sin(angle)
    lo, hi = proj.min(), proj.max()
    return (proj - lo) / max(hi - lo, 1e-6)


def background(rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """
    (H, W, 3) background, of the dtype of ``xx``: a two-colour gradient, low-frequency blotches and
    sometimes faint stripes.
    """
    h, w = xx.shape
    # In the precision of the coordinates: float32 halves the time on large images.
    c0, c1 = rng.uniform(0, 255, (2, 3)).astype(xx.dtype)
    t = ramp(rng, xx, yy)
    image = cv2.merge([c0[k] + (c1[k] - c0[k]) * t for k in range(3)])
    grid = rng.normal(0, rng.uniform(5, 30), (rng.integers(2, 6), rng.integers(2, 6), 3)).astype(
        xx.dtype
    )
    image += cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.3:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(4, 24)
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        image += grey(rng.uniform(4, 15) * np.sin(2 * np.pi * proj / period))
    return image


def grey(values: np.ndarray) -> np.ndarray:
    """(H, W, 3) from (H, W): the same values in all channels, many times faster than broadcasting
    ``[..., None]``."""
    return cv2.merge([values] * 3)


def contrasting_colour(
    rng: np.random.Generator, reference: np.ndarray, tries: int = 10
) -> np.ndarray:
    """A random colour, re-drawn a few times if it is too close to ``reference`` to be seen against
    it."""
    best, best_dist = None, -1.0
    for _ in range(tries):
        colour = rng.uniform(0, 255, 3)
        dist = float(np.linalg.norm(colour - reference))
        if dist > best_dist:
            best, best_dist = colour, dist
        if dist >= 100:
            break
    return best


def texture(
    rng: np.random.Generator, colour: np.ndarray, xx: np.ndarray, yy: np.ndarray, size: float
):
    """
    (h, w, 3) fill of one object over its box, of the dtype of ``xx``: solid, stripes, gradient,
    checkerboard or noise.
    """
    kind = rng.choice(5, p=[0.3, 0.2, 0.2, 0.15, 0.15])
    colour = colour.astype(xx.dtype)
    if kind == 0:
        return np.broadcast_to(colour, xx.shape + (3,))
    if kind == 4:
        return colour + rng.normal(0, rng.uniform(10, 35), xx.shape + (3,)).astype(xx.dtype)
    # A second colour that keeps some of the first, so the object still reads as one object.
    mix = rng.uniform(0.4, 0.7)
    other = (mix * colour + (1 - mix) * rng.uniform(0, 255, 3)).astype(xx.dtype)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        half_period = rng.uniform(1.5, max(2.0, size / 4))
        proj = xx * math.cos(angle) + yy * math.sin(angle)
        t = np.floor(proj / half_period) % 2
    elif kind == 2:
        t = ramp(rng, xx, yy)
    else:
        cell = rng.uniform(2, max(3.0, size / 3))
        t = (np.floor(xx / cell) + np.floor(yy / cell)) % 2
    return cv2.merge([colour[k] + (other[k] - colour[k]) * t for k in range(3)])


def box_slices(mask: np.ndarray) -> Tuple[slice, slice]:
    """Rows and columns of the tight box of a non-empty bool mask."""
    x, y, w, h = cv2.boundingRect(mask.view(np.uint8))
    return slice(y, y + h), slice(x, x + w)


def paint_objects(
    rng: np.random.Generator,
    image: np.ndarray,
    objects: Iterable[Tuple[np.ndarray, np.ndarray, float]],
    xx: np.ndarray,
    yy: np.ndarray,
) -> None:
    """
    Paints objects in drawing order into the float (H, W, 3) ``image``, each with a :func:`texture`
    in a colour that stands out from what is under it.

    Args:
        objects: (full mask, visible mask, size) of each object; only the visible pixels are
            painted.
    """
    for full, vis, size in objects:
        box = box_slices(full)
        # Judge contrast against what is under the object, lower objects included.
        colour = contrasting_colour(rng, image[box].reshape(-1, 3).mean(axis=0))
        fill = texture(rng, colour, xx[box], yy[box], size)
        np.copyto(image[box], fill, where=vis[box][..., None])


def _coco_annotation(mask: np.ndarray) -> Dict:
    rows, cols = box_slices(mask)
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {
        "bbox": [
            float(cols.start),
            float(rows.start),
            float(cols.stop - cols.start),
            float(rows.stop - rows.start),
        ],
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
    # The manifest compares these to its stored copy, so they must survive a json round trip
    # unchanged.
    params = {
        "num_images": int(num_images),
        "seed": int(seed),
        "image_size": list(as_hw(image_size)),
    }
    params.update(render_kwargs)
    return json.loads(json.dumps(params))


def generate_split(
    family: SyntheticFamily,
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Optional[ImageSize] = None,
    *,
    show_progress: bool = True,
    **render_kwargs,
) -> str:
    """
    Writes one split of a family (see the module docstring for the layout), overwriting what is
    there.

    Args:
        root: dataset directory.
        split: name of the split, used for its image directory and json file names.
        num_images: number of images.
        seed: non-negative int; image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``.
        image_size: (height, width), or one int for square images; default: the family's.
        show_progress: show a tqdm progress bar on stderr.
        render_kwargs: passed to the family's ``render``.

    Returns:
        str: path of the COCO instances json.
    """
    hw = as_hw(image_size or family.image_size)
    image_dir, json_file, manifest_file = _paths(root, split)
    params = _generation_params(num_images, seed, hw, **render_kwargs)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(json_file), exist_ok=True)
    # An interrupted run must not leave a manifest that vouches for a partial split.
    if os.path.exists(manifest_file):
        os.remove(manifest_file)
    logger.info(
        f"Generating {num_images} {family.name} images for split '{split}' into {image_dir} ..."
    )

    images, annotations = [], []
    image_bytes = 0
    for index in tqdm(
        range(num_images), desc=f"{family.name}_{split}", unit="img", disable=not show_progress
    ):
        image, objects = family.render(np.random.default_rng([seed, index]), hw, **render_kwargs)
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
            if obj["category"] is None:
                continue
            ann = {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj["category"] + 1,
            }
            ann.update(_coco_annotation(obj["mask"]))
            annotations.append(ann)

    coco = {
        "info": {"description": f"DSLA synthetic {family.name}", "version": str(family.version)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": name} for i, name in enumerate(family.classes)],
    }
    # dumps, not dump: only dumps uses the C encoder, many times faster on a large json.
    atomic_write_text(json_file, json.dumps(coco, separators=(",", ":")))
    manifest = {
        "version": family.version,
        "params": params,
        "json_sha256": _sha256(json_file),
        "image_bytes": image_bytes,
    }
    with open(manifest_file, "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    logger.info(f"Wrote {len(annotations)} annotations of split '{split}' to {json_file}.")
    return json_file


def _cache_problem(family: SyntheticFamily, root: str, split: str, params: Dict) -> Optional[str]:
    """Why the cached split does not match ``params`` and the family's version, or None if it
    does."""
    image_dir, json_file, manifest_file = _paths(root, split)
    try:
        with open(manifest_file) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return "no readable manifest"
    if manifest.get("version") != family.version or manifest.get("params") != params:
        return "generated with other parameters or by another generator version"
    try:
        if _sha256(json_file) != manifest.get("json_sha256"):
            return "annotation json does not match its checksum"
        image_bytes = sum(
            os.path.getsize(os.path.join(image_dir, _image_file_name(i)))
            for i in range(params["num_images"])
        )
    except OSError as e:
        return f"missing file ({e})"
    if image_bytes != manifest.get("image_bytes"):
        return "image files do not have the sizes they were written with"
    return None


def ensure_split(
    family: SyntheticFamily,
    root: str,
    split: str,
    num_images: int,
    seed: int,
    image_size: Optional[ImageSize] = None,
    **render_kwargs,
) -> str:
    """
    Like :func:`generate_split`, but reuses the split under ``root`` when its manifest shows that it
    was written with the same arguments and generator version and its files are intact. Safe to call
    from several processes at once: one generates while the others wait.

    Returns:
        str: path of the COCO instances json.
    """
    hw = as_hw(image_size or family.image_size)
    params = _generation_params(num_images, seed, hw, **render_kwargs)
    _, json_file, manifest_file = _paths(root, split)
    with file_lock(manifest_file):
        problem = _cache_problem(family, root, split, params)
        if problem is not None:
            logger.info(f"(Re)generating {family.name} split '{split}' under {root}: {problem}.")
            generate_split(family, root, split, num_images, seed, hw, **render_kwargs)
    return json_file


def _load_split(
    family: SyntheticFamily, name: str, root: str, split: str, num_images: int, seed: int, hw
):
    json_file = ensure_split(family, root, split, num_images, seed, hw)
    return load_coco_json(json_file, os.path.join(root, split), name)


def register_family(
    family: SyntheticFamily,
    root: Optional[str] = None,
    num_train: Optional[int] = None,
    num_val: Optional[int] = None,
    image_size: Optional[ImageSize] = None,
) -> None:
    """
    Registers ``{name}_train`` and ``{name}_val`` in detectron2's catalogs. Nothing is generated
    here: a split is generated (or checked against its manifest and reused) when its dataset is
    loaded. Calling this again re-registers both datasets with the new arguments.

    Each argument left as None is read from an environment variable (``NAME`` is the family's name
    in capitals), else takes the family's default:

    * root: ``$DSLA_NAME_ROOT``, else ``$DETECTRON2_DATASETS/dsla_name``, else
      ``./datasets/dsla_name``.
    * num_train, num_val: ``$DSLA_NAME_NUM_TRAIN``, ``$DSLA_NAME_NUM_VAL``.
    * image_size: ``$DSLA_NAME_IMAGE_SIZE`` ("160" or "HxW").
    """
    prefix = f"DSLA_{family.name.upper()}_"
    if root is None:
        root = os.environ.get(prefix + "ROOT") or os.path.join(
            os.environ.get("DETECTRON2_DATASETS", "datasets"), f"dsla_{family.name}"
        )
    root = os.path.abspath(root)
    if image_size is None:
        env_size = os.environ.get(prefix + "IMAGE_SIZE")
        image_size = (
            tuple(int(v) for v in env_size.lower().split("x")) if env_size else family.image_size
        )
        if len(image_size) == 1:
            image_size = image_size * 2
    hw = as_hw(image_size)
    num_images = {"train": num_train, "val": num_val}
    for split, (default, seed) in family.splits.items():
        if num_images[split] is None:
            num_images[split] = int(os.environ.get(f"{prefix}NUM_{split.upper()}", default))
        name = f"{family.name}_{split}"
        image_dir, json_file, _ = _paths(root, split)
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name,
            functools.partial(_load_split, family, name, root, split, num_images[split], seed, hw),
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(family.classes),
            thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(family.classes))},
            json_file=json_file,
            image_root=image_dir,
            evaluator_type="coco",
        )


def command_line(
    family: SyntheticFamily,
    argv: Optional[Sequence[str]] = None,
    add_arguments: Optional[Callable] = None,
    render_kwargs: Optional[Callable] = None,
) -> str:
    """
    ``python -m dsla.data.{name}``: writes one split of a family.

    Args:
        add_arguments: called with the parser, to add the family's own options.
        render_kwargs: maps the parsed arguments to the family's ``render_kwargs``.

    Returns:
        str: path of the COCO instances json.
    """
    default_h, default_w = family.image_size
    parser = argparse.ArgumentParser(
        description=f"Write one split of the DSLA synthetic {family.name} dataset."
    )
    parser.add_argument("--root", required=True, help="dataset directory")
    parser.add_argument("--split", default="train", help="split name (default: train)")
    defaults = ", ".join(f"{n} for {s}" for s, (n, _) in family.splits.items())
    parser.add_argument("--num-images", type=int, help=f"default: {defaults}, else required")
    seeds = ", ".join(f"{seed} for {s}" for s, (_, seed) in family.splits.items())
    parser.add_argument("--seed", type=int, help=f"default: {seeds}, else required")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs="+",
        default=[default_h, default_w],
        help=f"H [W] (default: {default_h} {default_w})",
    )
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    num_images, seed = family.splits.get(args.split, (None, None))
    num_images = args.num_images if args.num_images is not None else num_images
    seed = args.seed if args.seed is not None else seed
    if num_images is None or seed is None:
        parser.error(f"--num-images and --seed are required for split '{args.split}'.")
    image_size = args.image_size * 2 if len(args.image_size) == 1 else args.image_size
    kwargs = render_kwargs(args) if render_kwargs is not None else {}
    return generate_split(family, args.root, args.split, num_images, seed, image_size, **kwargs)
