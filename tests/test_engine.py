"""
dsla.engine: the evaluator follows the dataset's ``evaluator_type``, ``TEST.BEST_CHECKPOINT_METRIC``
keeps the best model, and a LazyConfig trains and evaluates through the same ``main`` as a YAML
config.
"""

import json
import os
import sys
import types

import pytest
import torch

from detectron2.data import MetadataCatalog
from detectron2.engine import hooks
from detectron2.evaluation import (
    COCOEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
)

from dsla import engine
from dsla.evaluation import ScoreIoUEvaluator

from conftest import REPO_ROOT, load_config, short_training_opts

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"


@pytest.fixture
def metadata():
    """Registers metadata under fresh names and removes it afterwards."""
    names = []

    def register(name, **kwargs):
        names.append(name)
        MetadataCatalog.get(name).set(**kwargs)
        return name

    yield register
    for name in names:
        MetadataCatalog.remove(name)


def test_coco_dataset_gets_the_coco_evaluator(shapes_root, tmp_path):
    cfg = load_config(QUICKSTART, ["OUTPUT_DIR", str(tmp_path)])
    evaluator = engine.build_evaluator(cfg, "shapes_val")
    assert isinstance(evaluator, COCOEvaluator)
    assert evaluator._output_dir == os.path.join(str(tmp_path), "inference", "shapes_val")


def test_score_iou_eval_adds_the_score_iou_evaluator(shapes_root, tmp_path):
    cfg = load_config(QUICKSTART, ["TEST.SCORE_IOU_EVAL", "True"])
    evaluator = engine.build_evaluator(cfg, "shapes_val", str(tmp_path))
    assert isinstance(evaluator, DatasetEvaluators)
    assert [type(e) for e in evaluator._evaluators] == [COCOEvaluator, ScoreIoUEvaluator]


def test_lvis_dataset_gets_the_lvis_evaluator(tmp_path, metadata, monkeypatch):
    # LVISEvaluator opens the annotations with the lvis package, which the tests do not install.
    class LVIS:
        def __init__(self, json_file):
            self.json_file = json_file

        def get_ann_ids(self):
            return [1]

    monkeypatch.setitem(sys.modules, "lvis", types.SimpleNamespace(LVIS=LVIS))
    name = metadata(
        "engine_test_lvis", evaluator_type="lvis", json_file=str(tmp_path / "lvis.json")
    )
    evaluator = engine.build_evaluator(load_config(QUICKSTART), name, str(tmp_path))
    assert isinstance(evaluator, LVISEvaluator)
    assert evaluator._lvis_api.json_file == str(tmp_path / "lvis.json")


def test_pascal_voc_dataset_gets_the_voc_evaluator(tmp_path, metadata):
    name = metadata(
        "engine_test_voc",
        evaluator_type="pascal_voc",
        dirname=str(tmp_path),
        split="test",
        year=2007,
        thing_classes=["a", "b"],
    )
    evaluator = engine.build_evaluator(load_config(QUICKSTART), name, str(tmp_path))
    assert isinstance(evaluator, PascalVOCDetectionEvaluator)
    assert evaluator._class_names == ["a", "b"]


@pytest.mark.parametrize("evaluator_type", [None, "sem_seg"])
def test_unknown_evaluator_type_is_an_error_naming_dataset_and_type(metadata, evaluator_type):
    name = metadata(f"engine_test_{evaluator_type}", thing_classes=["a"])
    if evaluator_type:
        MetadataCatalog.get(name).evaluator_type = evaluator_type
    with pytest.raises(ValueError, match=f"'{name}'.*evaluator_type {evaluator_type!r}"):
        engine.build_evaluator(load_config(QUICKSTART), name)


def _train_args(tmp_path, *opts):
    return engine.default_argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(REPO_ROOT, QUICKSTART),
            "MODEL.DEVICE",
            "cpu",
            "MODEL.DSLA.SCORE_THRESH_TEST",
            "0.0",
            *short_training_opts(tmp_path / "out", 2, evaluate=True),
            *opts,
        ]
    )


def test_best_checkpoint_metric_keeps_the_best_model(shapes_root, tmp_path):
    engine.main(
        _train_args(tmp_path, "TEST.EVAL_PERIOD", "1", "TEST.BEST_CHECKPOINT_METRIC", "bbox/AP50")
    )
    out = tmp_path / "out"
    with open(out / "metrics.json") as f:
        ap50 = [m["bbox/AP50"] for m in map(json.loads, f) if "bbox/AP50" in m]
    assert len(ap50) == 2  # evaluated after each of the two iterations
    best = torch.load(out / "model_best.pth", weights_only=False)
    # Saved at the first evaluation, and again at the second only if that one was strictly better.
    assert best["iteration"] == (1 if ap50[1] > ap50[0] else 0)
    assert (
        best["model"].keys()
        == torch.load(out / "model_final.pth", weights_only=False)["model"].keys()
    )


def test_without_best_checkpoint_metric_there_is_no_best_checkpointer(shapes_root, tmp_path):
    cfg = load_config(
        QUICKSTART,
        ["TEST.EVAL_PERIOD", "1", "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path)],
    )
    trainer = engine.Trainer(cfg)
    assert not any(isinstance(h, hooks.BestCheckpointer) for h in trainer._hooks)
    cfg.defrost()
    cfg.TEST.BEST_CHECKPOINT_METRIC = "bbox/AP"
    types_in_order = [type(h) for h in engine.Trainer(cfg)._hooks]
    assert types_in_order.index(hooks.BestCheckpointer) == types_in_order.index(hooks.EvalHook) + 1


# A LazyConfig in detectron2's layout, with the quick-start model built from its YAML and tiny
# sizes.
TINY_LAZY_CONFIG = """
import torch
from fvcore.common.param_scheduler import MultiStepParamScheduler
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
)
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import build_model
from detectron2.solver import WarmupParamScheduler
from detectron2.solver.build import get_default_optimizer_params

from dsla import get_dsla_cfg
from dsla.data import DSLADatasetMapper

model = L(build_model)(
    cfg=L(get_dsla_cfg)(
        config_file={quickstart!r},
        opts=["MODEL.DEVICE", "cpu", "MODEL.DSLA.SCORE_THRESH_TEST", "0.0"],
    )
)

dataloader = OmegaConf.create()
dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_train"),
    mapper=L(DSLADatasetMapper)(
        is_train=True, augmentations=[L(T.ResizeShortestEdge)(short_edge_length=96, max_size=96)],
        image_format="RGB", num_classes=4,
    ),
    total_batch_size=8,
    num_workers=0,
)
dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="shapes_val", filter_empty=False),
    mapper=L(DSLADatasetMapper)(
        is_train=False, augmentations=[L(T.ResizeShortestEdge)(short_edge_length=96, max_size=96)],
        image_format="RGB",
    ),
    num_workers=0,
)
dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${{..test.dataset.names}}", use_fast_impl=False
)

optimizer = L(torch.optim.SGD)(params=L(get_default_optimizer_params)(), lr=0.01, momentum=0.9)
lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(values=[1.0, 0.1], milestones=[900], num_updates=1000),
    warmup_length=0.01,
    warmup_factor=0.1,
)
train = dict(
    output_dir="output/tiny_lazy", init_checkpoint="", max_iter=1000, amp=dict(enabled=False),
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    checkpointer=dict(period=1000, max_to_keep=2), eval_period=0, log_period=1, device="cuda",
)
"""


def test_lazy_config_trains_then_evaluates(shapes_root, tmp_path, monkeypatch):
    config = tmp_path / "tiny_lazy.py"
    config.write_text(TINY_LAZY_CONFIG.format(quickstart=os.path.join(REPO_ROOT, QUICKSTART)))
    out = tmp_path / "out"
    overrides = [
        f"train.output_dir={out}",
        "train.max_iter=3",
        "dataloader.train.total_batch_size=2",
    ]
    evaluated_to = f"dataloader.evaluator.output_dir={tmp_path / 'eval_train'}"
    # The config asks for CUDA; without it (hidden here if present) training falls back to the CPU.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parser = engine.default_argument_parser()
    engine.main(parser.parse_args(["--config-file", str(config), *overrides, evaluated_to]))

    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 2
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert [m["iteration"] for m in metrics if "loss_dsla_cls" in m] == [0, 1, 2]
    evaluated = [m for m in metrics if "bbox/AP" in m]
    assert len(evaluated) == 1

    weights = f"train.init_checkpoint={out / 'model_final.pth'}"
    evaluated_to = f"dataloader.evaluator.output_dir={tmp_path / 'eval_only'}"
    again = engine.main(
        parser.parse_args(
            ["--config-file", str(config), "--eval-only", *overrides, weights, evaluated_to]
        )
    )
    assert again["bbox"]["AP"] == pytest.approx(evaluated[0]["bbox/AP"], nan_ok=True)
    # The same detections, box for box: the AP of 3 iterations is near 0 with any weights.
    detections = []
    for run in ("eval_train", "eval_only"):
        with open(tmp_path / run / "coco_instances_results.json") as f:
            detections.append(json.load(f))
    expected, actual = detections
    assert len(expected) > 0 and len(actual) == len(expected)
    for want, got in zip(expected, actual):
        assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
        assert got["bbox"] == pytest.approx(want["bbox"], abs=1e-3)
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)


def test_shipped_quickstart_lazy_config_trains_and_evaluates(shapes_root, tmp_path):
    out = tmp_path / "out"
    args = engine.default_argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py"),
            f"train.output_dir={out}",
            "train.max_iter=3",
            "train.log_period=1",
            "train.device=cpu",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            "dataloader.test.num_workers=0",
            "model.proposal_generator.score_thresh_test=0.0",
        ]
    )
    engine.main(args)
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == 2
    with open(out / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    assert [m["iteration"] for m in metrics if "loss_dsla_box" in m] == [0, 1, 2]
    assert sum("bbox/AP" in m for m in metrics) == 1
