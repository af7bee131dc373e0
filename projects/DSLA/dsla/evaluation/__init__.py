from .score_iou import (
    ScoreIoUEvaluator,
    add_score_iou_config,
    load_score_iou_pairs,
    summarize_score_iou,
)

__all__ = [
    "ScoreIoUEvaluator",
    "add_score_iou_config",
    "load_score_iou_pairs",
    "summarize_score_iou",
]
