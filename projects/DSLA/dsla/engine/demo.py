"""
What ``make demo`` and ``make trees-demo`` do: train a config, evaluate it with its dataset's
evaluator, draw validation pictures (ground truth beside detections, one contact sheet) and write a
summary. ``tools/quickstart.py`` and ``tools/trees_demo.py`` are thin wrappers.
"""

import json
import os
import time
from typing import Any, Dict, Optional, Sequence

import torch

from detectron2.evaluation import inference_on_dataset

from ..checkpoint import AtomicCheckpointer
from ..config import get_dsla_cfg
from ..evaluation import build_evaluator
from ..utils.precision import cpu_has_bfloat16
from ..visualization import visualize_predictions
from .defaults import Trainer, default_argument_parser, final_metrics, main

__all__ = ["evaluate_datasets", "format_summary", "train_and_show", "write_summary"]


def train_and_show(
    config_file: str,
    output_dir: str,
    device: str,
    opts: Sequence[str] = (),
    num_vis: int = 24,
    threshold: float = 0.3,
    vis_dataset: Optional[str] = None,
    weights: Optional[str] = None,
) -> Dict[str, Any]:
    """
    Train ``config_file`` (with ``KEY VALUE`` ``opts``) into ``output_dir`` through
    :func:`dsla.engine.main`, then draw ``num_vis`` images of ``vis_dataset`` (default: the first
    test dataset) with the final model into ``output_dir/vis``. On a CPU with bfloat16
    instructions it trains in mixed precision (``SOLVER.AMP.ENABLED True``, which ``opts`` can
    turn off): measured as fast as that and as accurate as float32 (docs/benchmarks.md).
    With ``weights`` (a trained model of that config) it does not train: it evaluates and draws
    that model (``train_minutes`` is then the evaluation's).

    Returns:
        the last evaluation's metrics (``bbox/AP``, ...) and ``train_minutes`` (training and its
        evaluation), ``device``, ``weights``, ``vis_dir``, ``contact_sheet``, and ``cfg`` (the
        config of the trained model).
    """
    start = time.perf_counter()
    amp = torch.device(device).type == "cpu" and cpu_has_bfloat16()
    args = default_argument_parser().parse_args(
        ["--config-file", config_file, "MODEL.DEVICE", device, "OUTPUT_DIR", output_dir]
        + (["SOLVER.AMP.ENABLED", "True"] if amp else [])
        + list(opts)
    )
    trained = weights is None
    if trained:
        main(args)
        weights = os.path.join(output_dir, "model_final.pth")
    cfg = get_dsla_cfg(args.config_file, [*args.opts, "MODEL.WEIGHTS", weights])
    if trained:
        metrics = final_metrics(output_dir)
    else:
        name = cfg.DATASETS.TEST[0]
        metrics = {f"bbox/{k}": v for k, v in evaluate_datasets(cfg, [name])[name].items()}
    train_minutes = (time.perf_counter() - start) / 60
    vis_dir = os.path.join(output_dir, "vis")
    _, sheet = visualize_predictions(
        cfg, vis_dataset or cfg.DATASETS.TEST[0], vis_dir, num_vis, threshold=threshold
    )
    return {
        **metrics,
        "train_minutes": train_minutes,
        "device": device,
        "amp": cfg.SOLVER.AMP.ENABLED,
        "trained": trained,
        "weights": weights,
        "vis_dir": vis_dir,
        "contact_sheet": sheet,
        "cfg": cfg,
    }


def evaluate_datasets(cfg, dataset_names: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """
    The box metrics (``AP``, ``AP50``, ...) of the model of ``cfg`` (``MODEL.WEIGHTS``) on each
    registered dataset, with its evaluator (:func:`dsla.evaluation.build_evaluator`).
    """
    model = Trainer.build_model(cfg).eval()
    AtomicCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    results = {}
    for name in dataset_names:
        evaluator = build_evaluator(cfg, name, os.path.join(cfg.OUTPUT_DIR, "inference", name))
        results[name] = inference_on_dataset(
            model, Trainer.build_test_loader(cfg, name), evaluator
        )["bbox"]
    return results


def format_summary(title: str, result: Dict[str, Any], dataset: str, threshold: float) -> str:
    """The lines a demo prints at its end."""
    return (
        f"\n{title} finished in {result['minutes']:.1f} minutes on {result['device']} "
        f"(training and evaluation {result['train_minutes']:.1f}).\n"
        f"  box AP on {dataset}: {result['bbox/AP']:.1f}  (AP50 {result['bbox/AP50']:.1f}, "
        f"AP75 {result['bbox/AP75']:.1f}, APs {result['bbox/APs']:.1f}, "
        f"APm {result['bbox/APm']:.1f}, APl {result['bbox/APl']:.1f})\n"
        f"  model:          {result['weights']}\n"
        f"  visualizations: {result['vis_dir']}/ (ground truth left, detections with score >= "
        f"{threshold:g} right)\n"
        f"  contact sheet:  {result['contact_sheet']}\n"
    )


def write_summary(path: str, result: Dict[str, Any]) -> None:
    """``result`` without the config as JSON."""
    with open(path, "w") as f:
        json.dump({k: v for k, v in result.items() if k != "cfg"}, f, indent=2)
