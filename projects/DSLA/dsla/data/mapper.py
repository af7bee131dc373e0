import math

from detectron2.data import DatasetMapper

__all__ = ["DSLADatasetMapper"]


class DSLADatasetMapper(DatasetMapper):
    """
    detectron2's :class:`DatasetMapper` with errors that name the image: an unreadable image file, or an
    annotation whose box has a non-finite coordinate, stops with the file name and image id instead of a bare
    decoder trace or a silently dropped box. Boxes that are empty or outside the image after clipping are
    dropped by detectron2 as usual.
    """

    def __call__(self, dataset_dict):
        where = f"{dataset_dict.get('file_name')} (image_id {dataset_dict.get('image_id')})"
        for i, anno in enumerate(dataset_dict.get("annotations", ())):
            if not all(math.isfinite(v) for v in anno["bbox"]):
                raise ValueError(f"{where}: annotation {i} has a non-finite box {list(anno['bbox'])}")
        try:
            return super().__call__(dataset_dict)
        except OSError as e:
            # PIL's decoder errors (truncated or corrupt files) and missing files are OSErrors.
            raise OSError(f"Cannot read image {where}: {e}") from e
