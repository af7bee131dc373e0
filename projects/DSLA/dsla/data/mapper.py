import math
from typing import Optional

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.structures import BoxMode

from .coco import model_num_classes
from .transforms import overhead_augmentations

__all__ = ["DSLADatasetMapper"]


class DSLADatasetMapper(DatasetMapper):
    """
    detectron2's :class:`DatasetMapper` with errors that name the image: an unreadable image file,
    or an annotation whose box has a non-finite coordinate or a negative width or height, or whose
    class id is outside ``[0, num_classes)``, stops with the file name, image id and annotation
    index instead of a bare decoder trace, a silently dropped box, a box mirrored into a valid one
    by the resize, or an error deep in the loss. Boxes that are empty or outside the image after
    clipping are dropped by detectron2 as usual.
    """

    @configurable
    def __init__(self, is_train: bool, *, num_classes: Optional[int] = None, **kwargs):
        """
        Args:
            num_classes: the model's number of classes; None skips the class-id check.
            is_train, kwargs: as for :class:`DatasetMapper`.
        """
        super().__init__(is_train, **kwargs)
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        ret = super().from_config(cfg, is_train)
        ret["num_classes"] = model_num_classes(cfg)[1]
        if is_train:
            ret["augmentations"] += overhead_augmentations(
                cfg.INPUT.VERTICAL_FLIP, cfg.INPUT.RANDOM_ROTATE_90, cfg.INPUT.COLOR_JITTER
            )
        return ret

    def __call__(self, dataset_dict):
        where = f"{dataset_dict.get('file_name')} (image_id {dataset_dict.get('image_id')})"
        for i, anno in enumerate(dataset_dict.get("annotations", ())):
            self._check_annotation(anno, f"{where}: annotation {i}")
        try:
            return super().__call__(dataset_dict)
        except OSError as e:
            # PIL's decoder errors (truncated or corrupt files) and missing files are OSErrors.
            raise OSError(f"Cannot read image {where}: {e}") from e

    def _check_annotation(self, anno, where: str):
        bbox = list(anno["bbox"])
        if not all(math.isfinite(v) for v in bbox):
            raise ValueError(f"{where} has a non-finite box {bbox}")
        x0, y0, x1, y1 = BoxMode.convert(bbox, anno["bbox_mode"], BoxMode.XYXY_ABS)
        if x1 < x0 or y1 < y0:
            raise ValueError(
                f"{where} has a box of negative width or height {bbox} "
                f"({BoxMode(anno['bbox_mode']).name})"
            )
        class_id = anno.get("category_id")
        if class_id is None:
            raise ValueError(f"{where} has no category_id")
        if self.num_classes is not None and not 0 <= class_id < self.num_classes:
            raise ValueError(
                f"{where} has class id {class_id}, outside [0, {self.num_classes}) for a model of "
                f"{self.num_classes} classes"
            )
