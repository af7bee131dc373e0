from .build import build_evaluator
from .score_iou import ScoreIoUEvaluator, load_score_iou_pairs, summarize_score_iou

__all__ = [
    "ScoreIoUEvaluator",
    "build_evaluator",
    "load_score_iou_pairs",
    "summarize_score_iou",
]
