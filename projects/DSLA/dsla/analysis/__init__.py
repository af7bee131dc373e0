"""
Measurements that explain a detector's accuracy: per ground truth, its positives per level, their
label mass, IoU, score and box loss, how well its top-scored candidate and detection fit it, and
whether it survives the candidate selection and NMS; and two diagnoses side by side
(``tools/diagnose.py``).
"""

from .diagnose import (
    DEFAULT_ASPECT_EDGES,
    ImageProbe,
    diagnose_model,
    gt_point_statistics,
    gt_recall,
    gt_top_and_best_iou,
    measure_image,
    probe_model,
    summarize,
)
from .report import (
    DEFAULT_SIDE_EDGES,
    compare_diagnoses,
    format_diagnosis,
    load_diagnosis,
    load_diagnosis_inputs,
    run_diagnosis,
    write_diagnosis,
)

__all__ = [
    "DEFAULT_ASPECT_EDGES",
    "DEFAULT_SIDE_EDGES",
    "ImageProbe",
    "compare_diagnoses",
    "diagnose_model",
    "format_diagnosis",
    "gt_point_statistics",
    "gt_recall",
    "gt_top_and_best_iou",
    "load_diagnosis",
    "load_diagnosis_inputs",
    "measure_image",
    "probe_model",
    "run_diagnosis",
    "summarize",
    "write_diagnosis",
]
