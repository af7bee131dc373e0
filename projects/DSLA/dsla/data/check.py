"""
Checks of a COCO-format detection dataset before training on it (``tools/check_dataset.py``).
"""

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import List

from PIL import Image

__all__ = ["DatasetReport", "check_coco_dataset"]


@dataclass
class DatasetReport:
    """Problems found in a dataset. ``errors`` make training fail or go wrong; ``warnings`` deserve
    a look."""

    errors: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def error(self, kind: str, message: str):
        self.counts[kind] += 1
        self.errors.append(message)

    def warn(self, kind: str, message: str):
        self.counts[kind] += 1
        self.warnings.append(message)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_image_file(path: str, image: dict, report: DatasetReport, verify: bool):
    where = f"image id {image.get('id')} ({image.get('file_name')})"
    if not os.path.isfile(path):
        report.error("missing_image", f"{where}: file not found at {path}")
        return
    try:
        with Image.open(path) as im:
            size = im.size
            if verify:
                im.load()
    except (OSError, SyntaxError) as e:
        report.error("unreadable_image", f"{where}: cannot read {path}: {e}")
        return
    if (image.get("width"), image.get("height")) != size and image.get("width") is not None:
        report.error(
            "size_mismatch",
            f"{where}: JSON says {image.get('width')}x{image.get('height')} but the file is "
            f"{size[0]}x{size[1]}",
        )


def check_coco_dataset(
    json_file: str, image_root: str, verify_images: bool = True
) -> DatasetReport:
    """
    Check a COCO-format instances file and its images.

    Errors: unparsable JSON, missing or unreadable images, image sizes that differ from the file,
    annotations of unknown images or categories, boxes that are malformed, non-finite, of
    non-positive size, or (beyond one pixel of tolerance) outside the image. Warnings: images
    without annotations, duplicate ids.

    Args:
        verify_images: decode every image fully (slower; catches truncated files), not just its
            header.
    """
    report = DatasetReport()
    try:
        with open(json_file) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        report.error("bad_json", f"{json_file}: cannot load: {e}")
        return report

    images = {}
    for image in data.get("images", []):
        if image.get("id") in images:
            report.warn("duplicate_image_id", f"image id {image.get('id')} appears more than once")
        images[image.get("id")] = image
    categories = {c["id"]: c.get("name") for c in data.get("categories", [])}
    if not categories:
        report.error("no_categories", f"{json_file}: no categories")
    report.counts["images"] = len(images)
    report.counts["categories"] = len(categories)

    annotated = set()
    for ann in data.get("annotations", []):
        report.counts["annotations"] += 1
        image = images.get(ann.get("image_id"))
        where = f"annotation id {ann.get('id')} of image id {ann.get('image_id')}"
        if image is None:
            report.error("unknown_image", f"{where}: no image with that id")
            continue
        where += f" ({image.get('file_name')})"
        annotated.add(ann["image_id"])
        if ann.get("category_id") not in categories:
            report.error(
                "unknown_category",
                f"{where}: category id {ann.get('category_id')} is not in categories",
            )
        bbox = ann.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            report.error("malformed_box", f"{where}: bbox {bbox!r} is not [x, y, width, height]")
            continue
        try:
            x, y, w, h = (float(v) for v in bbox)
        except (TypeError, ValueError):
            report.error("malformed_box", f"{where}: bbox {bbox!r} has non-numeric values")
            continue
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            report.error("non_finite_box", f"{where}: bbox {bbox} has a non-finite value")
            continue
        if w <= 0 or h <= 0:
            report.error("empty_box", f"{where}: bbox {bbox} has non-positive width or height")
        width, height = image.get("width"), image.get("height")
        if width is not None and height is not None:
            if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
                report.error(
                    "box_outside_image",
                    f"{where}: bbox {bbox} extends outside the {width}x{height} image",
                )

    for image_id, image in images.items():
        if image_id not in annotated:
            report.warn(
                "image_without_annotations",
                f"image id {image_id} ({image.get('file_name')}) has no annotations",
            )
        _check_image_file(
            os.path.join(image_root, image.get("file_name", "")), image, report, verify_images
        )
    return report
