"""
Measurements that explain a detector's accuracy: per ground truth, its positives per level, their
label mass, IoU and score, and whether it survives the candidate selection and NMS
(``tools/diagnose.py``).
"""

from .diagnose import (
    ImageProbe,
    diagnose_model,
    gt_point_statistics,
    gt_recall,
    measure_image,
    probe_model,
    summarize,
)
from .report import (
    DEFAULT_SIDE_EDGES,
    format_diagnosis,
    load_diagnosis_inputs,
    run_diagnosis,
    write_diagnosis,
)

__all__ = [
    "DEFAULT_SIDE_EDGES",
    "ImageProbe",
    "diagnose_model",
    "format_diagnosis",
    "gt_point_statistics",
    "gt_recall",
    "load_diagnosis_inputs",
    "measure_image",
    "probe_model",
    "run_diagnosis",
    "summarize",
    "write_diagnosis",
]
