"""
Pictures of a detector's output that a person can read: small images are enlarged before
detectron2's ``Visualizer`` draws on them (its labels have a minimum font size, which on a 160-pixel
image covers the objects), the ground truth is drawn beside the detections under a title each, and
the pictures of a run are gathered on one contact sheet.
"""

import logging
import math
import os
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
import tqdm

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import read_image
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer

from .checkpoint import Predictor

__all__ = [
    "contact_sheet",
    "draw_boxes",
    "draw_ground_truth_and_detections",
    "enlarge",
    "visualize_predictions",
]

logger = logging.getLogger(__name__)

MIN_SHORT_SIDE = 480
CONTACT_SHEET = "contact_sheet.png"
_WHITE = 255
_GAP = 8
# Wider than the bar between the two panels of a picture, so that pictures stand apart on the sheet.
_SHEET_GAP = 24


def enlarge(
    image: np.ndarray, min_short_side: int = MIN_SHORT_SIDE
) -> Tuple[np.ndarray, Tuple[float, float]]:
    """
    Upscale ``image`` (``[H, W, C]``) so that its short side is at least ``min_short_side``; larger
    images are returned as they are.

    Returns:
        (image, (scale_x, scale_y)): the new image and the factors that map its input coordinates to
        it.
    """
    h, w = image.shape[:2]
    scale = min_short_side / min(h, w)
    if scale <= 1:
        return image, (1.0, 1.0)
    new_w, new_h = round(w * scale), round(h * scale)
    return cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR), (new_w / w, new_h / h)


def _scaled_annotations(annotations: Sequence[Dict], scale: Tuple[float, float]) -> List[Dict]:
    """Boxes and classes of dataset-dict annotations in the enlarged image (XYXY_ABS)."""
    factors = np.array([*scale, *scale])
    return [
        {
            "bbox": (
                np.asarray(BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)) * factors
            ).tolist(),
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": a["category_id"],
            "iscrowd": a.get("iscrowd", 0),
        }
        for a in annotations
    ]


def _scaled_detections(
    detections: Instances, image_size: Tuple[int, int], scale: Tuple[float, float]
) -> Instances:
    boxes = Boxes(detections.pred_boxes.tensor.clone())
    boxes.scale(*scale)
    return Instances(
        image_size, pred_boxes=boxes, scores=detections.scores, pred_classes=detections.pred_classes
    )


def _with_title(panel: np.ndarray, title: str) -> np.ndarray:
    """``panel`` under a white strip holding ``title``, in a font that grows with the panel."""
    height = max(32, panel.shape[0] // 14)
    strip = np.full((height, panel.shape[1], 3), _WHITE, dtype=np.uint8)
    font_scale = height / 45
    thickness = max(1, round(font_scale * 2))
    (_, text_h), _ = cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    origin = (_GAP, (height + text_h) // 2)
    cv2.putText(
        strip,
        title,
        origin,
        cv2.FONT_HERSHEY_SIMPLEX,
        font_scale,
        (0, 0, 0),
        thickness,
        cv2.LINE_AA,
    )
    return np.concatenate([strip, panel], axis=0)


def draw_ground_truth_and_detections(
    image: np.ndarray,
    annotations: Sequence[Dict],
    detections: Instances,
    metadata,
    threshold: float,
    min_short_side: int = MIN_SHORT_SIDE,
) -> np.ndarray:
    """
    The ground truth (left) and the detections scoring at least ``threshold`` (right) of one image,
    each under a title, drawn with detectron2's ``Visualizer`` on the image enlarged by
    :func:`enlarge`. Boxes and classes
    only: DSLA detects boxes, and masks of the ground truth would hide what is being compared.

    Args:
        image: RGB ``[H, W, 3]`` uint8.
        annotations: the image's dataset-dict annotations (``bbox``, ``bbox_mode``,
            ``category_id``).
        detections: ``pred_boxes``, ``scores``, ``pred_classes`` in ``image``'s coordinates.
        metadata: the dataset's metadata (``thing_classes``).

    Returns:
        RGB ``[title + H', 2 * W' + gap, 3]`` uint8, where ``H', W'`` is the enlarged size.
    """
    big, scale = enlarge(image, min_short_side)
    kept = detections[detections.scores >= threshold]
    gt = Visualizer(big, metadata).draw_dataset_dict(
        {"annotations": _scaled_annotations(annotations, scale)}
    )
    pred = Visualizer(big, metadata).draw_instance_predictions(
        _scaled_detections(kept, big.shape[:2], scale)
    )
    left = _with_title(gt.get_image(), "ground truth")
    right = _with_title(pred.get_image(), f"detections (score >= {threshold:g})")
    bar = np.full((left.shape[0], _GAP, 3), _WHITE, dtype=np.uint8)
    return np.concatenate([left, bar, right], axis=1)


def draw_boxes(
    image: np.ndarray, detections: Instances, threshold: float, max_width: int = 0
) -> np.ndarray:
    """
    The detections scoring at least ``threshold`` as thin boxes, without labels, for images with
    too many objects for detectron2's ``Visualizer`` (a whole orthophoto holds hundreds): green
    from yellow (``threshold``) to green (score 1).

    Args:
        image: ``[H, W, 3]`` uint8, BGR.
        detections: ``pred_boxes`` and ``scores`` in ``image``'s pixels.
        max_width: shrink the result to this width (0: as it is).

    Returns:
        BGR ``[H', W', 3]`` uint8.
    """
    drawn = image.copy()
    kept = detections[detections.scores >= threshold]
    thickness = max(1, round(min(image.shape[:2]) / 600))
    for box, score in zip(kept.pred_boxes.tensor.tolist(), kept.scores.tolist()):
        t = (score - threshold) / max(1 - threshold, 1e-6)
        color = (0, 255, round(255 * (1 - t)))
        x0, y0, x1, y1 = (round(v) for v in box)
        cv2.rectangle(drawn, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
    if max_width and drawn.shape[1] > max_width:
        height = round(drawn.shape[0] * max_width / drawn.shape[1])
        drawn = cv2.resize(drawn, (max_width, height), interpolation=cv2.INTER_AREA)
    return drawn


def contact_sheet(
    images: Sequence[np.ndarray], max_width: int = 3200, columns: int = 0
) -> np.ndarray:
    """
    All ``images`` on one white grid, in order, row by row, each shrunk by the same factor so that
    the sheet is at most ``max_width`` pixels wide.

    Args:
        images: ``[H_i, W_i, 3]`` uint8 each; each sits in a cell of the largest height and width.
        columns: images per row; 0 picks the count that makes the sheet roughly square.

    Returns:
        ``[rows * h + (rows + 1) * 24, columns * w + (columns + 1) * 24, 3]`` uint8, where ``h, w``
        is the cell.
    """
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    if columns <= 0:
        columns = math.ceil(math.sqrt(len(images) * cell_h / cell_w))
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    shrink = min(1.0, (max_width - (columns + 1) * _SHEET_GAP) / (columns * cell_w))
    tile_h, tile_w = int(cell_h * shrink), int(cell_w * shrink)
    sheet_shape = (
        rows * tile_h + (rows + 1) * _SHEET_GAP,
        columns * tile_w + (columns + 1) * _SHEET_GAP,
        3,
    )
    sheet = np.full(sheet_shape, _WHITE, dtype=np.uint8)
    for i, im in enumerate(images):
        h, w = min(tile_h, round(im.shape[0] * shrink)), min(tile_w, round(im.shape[1] * shrink))
        # INTER_AREA averages the pixels it merges, so thin box edges and text stay visible when
        # shrunk.
        tile = cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA) if shrink < 1 else im
        y = _SHEET_GAP + (i // columns) * (tile_h + _SHEET_GAP)
        x = _SHEET_GAP + (i % columns) * (tile_w + _SHEET_GAP)
        sheet[y : y + h, x : x + w] = tile
    return sheet


def visualize_predictions(
    cfg, dataset: str, output_dir: str, num_images: int, threshold: float
) -> Tuple[List[str], str]:
    """
    Run the model of ``cfg`` (``MODEL.WEIGHTS``) on the first ``num_images`` images of the
    registered ``dataset`` and write, for each, :func:`draw_ground_truth_and_detections` to
    ``output_dir/<image name>.png``, and all of them on one :func:`contact_sheet`,
    ``output_dir/contact_sheet.png``.

    Returns:
        (paths of the pictures, path of the contact sheet)
    """
    metadata = MetadataCatalog.get(dataset)
    records = DatasetCatalog.get(dataset)[:num_images]
    predictor = Predictor(cfg)
    os.makedirs(output_dir, exist_ok=True)
    paths, pictures = [], []
    for record in tqdm.tqdm(records, desc="visualizing", unit="img"):
        image = read_image(record["file_name"], format="RGB")
        detections = predictor(image[:, :, ::-1])["instances"].to(
            "cpu"
        )  # Predictor takes BGR, as DefaultPredictor
        picture = draw_ground_truth_and_detections(
            image, record.get("annotations", []), detections, metadata, threshold
        )
        path = os.path.join(
            output_dir, os.path.splitext(os.path.basename(record["file_name"]))[0] + ".png"
        )
        cv2.imwrite(path, picture[:, :, ::-1])
        paths.append(path)
        pictures.append(picture)
    sheet_path = os.path.join(output_dir, CONTACT_SHEET)
    cv2.imwrite(sheet_path, contact_sheet(pictures)[:, :, ::-1])
    logger.info(f"Wrote {len(paths)} pictures and their contact sheet {sheet_path}")
    return paths, sheet_path
