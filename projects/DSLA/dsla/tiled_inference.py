"""
Detection on images far larger than the training tiles (whole aerial orthophotos): the model runs on
overlapping tiles and the detections are merged.

SAHI, the ecosystem's library for sliced inference on detectron2 models, is not used: its
detectron2 wrapper builds the model from a detectron2 model-zoo config through its own predictor
(not a DSLA config or model), and it requires the GUI build of OpenCV, which replaces the headless
one this project installs. The merge here is what SAHI's default does for this case: class-wise
NMS over the tiles' detections, after dropping the boxes cut by a tile's inner border, which the
overlap lets a neighbouring tile see whole.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from detectron2.data import transforms as T
from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

from .checkpoint import Predictor

__all__ = ["TiledPredictor", "merge_tile_detections", "predict_tiled", "tile_origins"]


def tile_origins(length: int, tile: int, overlap: int) -> List[int]:
    """
    Start offsets of tiles of ``tile`` pixels over ``length`` pixels, consecutive tiles sharing at
    least ``overlap`` pixels; the last tile ends at ``length`` (one tile if ``length <= tile``).
    """
    if tile <= overlap:
        raise ValueError(f"Tiles of {tile} pixels cannot overlap by {overlap}")
    if length <= tile:
        return [0]
    count = int(np.ceil((length - overlap) / (tile - overlap)))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def merge_tile_detections(
    tiles: Sequence[Tuple[Tuple[int, int, int, int], Instances]],
    image_size: Tuple[int, int],
    nms_thresh: float,
    max_detections: int,
    border_margin: float = 2.0,
) -> Instances:
    """
    The detections of one image from those of its tiles.

    Args:
        tiles: per tile, its (x0, y0, x1, y1) in the image and its detections (``pred_boxes``,
            ``scores``, ``pred_classes``) in the tile's coordinates.
        image_size: (height, width) of the image.
        nms_thresh: IoU of the class-wise NMS over all tiles.
        max_detections: detections kept, best scores first.
        border_margin: a box within this many pixels of a tile border that is not an image border
            is dropped: the object goes on beyond the tile, and the overlap shows it whole to a
            neighbour.

    Returns:
        Instances of the image with ``pred_boxes``, ``scores``, ``pred_classes``.
    """
    height, width = image_size
    boxes, scores, classes = [], [], []
    for (x0, y0, x1, y1), inst in tiles:
        b = inst.pred_boxes.tensor + torch.tensor([x0, y0, x0, y0], dtype=torch.float32)
        inner = torch.ones(len(b), dtype=torch.bool)
        for coordinate, edge, at_image_border, sign in (
            (b[:, 0], x0, x0 == 0, 1),
            (b[:, 1], y0, y0 == 0, 1),
            (b[:, 2], x1, x1 == width, -1),
            (b[:, 3], y1, y1 == height, -1),
        ):
            if not at_image_border:
                inner &= sign * (coordinate - edge) > border_margin
        boxes.append(b[inner])
        scores.append(inst.scores[inner])
        classes.append(inst.pred_classes[inner])
    result = Instances(image_size)
    if not boxes:
        boxes, scores, classes = [torch.zeros(0, 4)], [torch.zeros(0)], [torch.zeros(0).long()]
    boxes, scores, classes = torch.cat(boxes), torch.cat(scores), torch.cat(classes)
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    result.pred_boxes = Boxes(boxes[keep])
    result.scores = scores[keep]
    result.pred_classes = classes[keep]
    return result


class TiledPredictor:
    """
    A DSLA (or any detectron2) model over a large image in overlapping tiles, called as detectron2's
    ``DefaultPredictor``: ``predictor(image)`` with an ``HxWx3`` uint8 BGR array (OpenCV's order;
    converted to the model's ``input_format``) returns ``{"instances": Instances}`` in the image's
    pixels.

    Each tile is resized as the model's test input (``INPUT.MIN_SIZE_TEST``); tiles of the training
    tiles' size keep the scale the model learned.
    """

    def __init__(
        self,
        model: Callable[[List[Dict]], List[Dict]],
        *,
        tile_size: int,
        overlap: int,
        min_size_test: int,
        max_size_test: int,
        nms_thresh: float,
        max_detections: int = 1000,
        input_format: str = "BGR",
        batch_size: int = 4,
        border_margin: float = 2.0,
    ):
        """
        Args:
            model: a detectron2 model in eval mode.
            tile_size: side of the tiles in image pixels.
            overlap: pixels shared by neighbouring tiles; at least the largest object for every
                object to be whole in some tile.
            min_size_test, max_size_test: the model's test-time resize of each tile.
            nms_thresh: IoU of the merge's class-wise NMS (the model's own NMS threshold).
            max_detections: detections kept for the whole image.
            input_format: the model's ``INPUT.FORMAT``, "BGR" or "RGB".
            batch_size: tiles per forward pass.
            border_margin: see :func:`merge_tile_detections`.
        """
        self.model = model
        self.tile_size = tile_size
        self.overlap = overlap
        self.resize = T.ResizeShortestEdge([min_size_test, min_size_test], max_size_test)
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections
        if input_format not in ("BGR", "RGB"):
            raise ValueError(f"TiledPredictor takes BGR or RGB models; got {input_format!r}")
        self.input_format = input_format
        self.batch_size = batch_size
        self.border_margin = border_margin

    @classmethod
    def from_config(
        cls, model, cfg, tile_size: Optional[int] = None, overlap: Optional[int] = None
    ):
        """
        A predictor for ``model`` built from ``cfg``: tiles of ``INPUT.MAX_SIZE_TEST`` pixels (the
        test input) by default, overlapping by a quarter of that.
        """
        tile_size = tile_size or cfg.INPUT.MAX_SIZE_TEST
        nms = {"FCOSBaseline": cfg.MODEL.FCOS, "RetinaNet": cfg.MODEL.RETINANET}.get(
            cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.DSLA
        ).NMS_THRESH_TEST
        return cls(
            model,
            tile_size=tile_size,
            overlap=tile_size // 4 if overlap is None else overlap,
            min_size_test=cfg.INPUT.MIN_SIZE_TEST,
            max_size_test=cfg.INPUT.MAX_SIZE_TEST,
            nms_thresh=nms,
            input_format=cfg.INPUT.FORMAT,
        )

    def tiles(self, height: int, width: int) -> List[Tuple[int, int, int, int]]:
        """The (x0, y0, x1, y1) of every tile of an image, row by row."""
        xs = tile_origins(width, self.tile_size, self.overlap)
        ys = tile_origins(height, self.tile_size, self.overlap)
        return [
            (x, y, min(x + self.tile_size, width), min(y + self.tile_size, height))
            for y in ys
            for x in xs
        ]

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> Dict[str, Instances]:
        if self.input_format == "RGB":
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        tiles = self.tiles(height, width)
        detections = []
        for start in range(0, len(tiles), self.batch_size):
            batch = []
            for x0, y0, x1, y1 in tiles[start : start + self.batch_size]:
                crop = image[y0:y1, x0:x1]
                resized = self.resize.get_transform(crop).apply_image(crop)
                tensor: Tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
                batch.append({"image": tensor, "height": y1 - y0, "width": x1 - x0})
            detections += [out["instances"].to("cpu") for out in self.model(batch)]
        merged = merge_tile_detections(
            list(zip(tiles, detections)),
            (height, width),
            self.nms_thresh,
            self.max_detections,
            self.border_margin,
        )
        return {"instances": merged}


def predict_tiled(
    cfg, image: np.ndarray, tile_size: Optional[int] = None, overlap: Optional[int] = None
) -> Instances:
    """
    The detections of the model of ``cfg`` (``MODEL.WEIGHTS``) on a large BGR image, in tiles
    (:meth:`TiledPredictor.from_config`).
    """
    model = Predictor(cfg).model
    return TiledPredictor.from_config(model, cfg, tile_size, overlap)(image)["instances"]
