"""
The quick-start config on a small copy of the shapes dataset: it trains (the box branch learns), evaluates,
and the trained model draws boxes through demo.py and tools/visualize_predictions.py.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model

from conftest import REPO_ROOT, load_config

from dsla.data import register_shapes_datasets
from tools import quickstart

QUICKSTART = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml")
ITERS = 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A quick-start model trained by tools/quickstart.py (make demo) for a few iterations on 48 images."""
    root = tmp_path_factory.mktemp("shapes")
    register_shapes_datasets(root=str(root), num_train=48, num_val=12)
    out = root / "out"
    quickstart.main(
        ["--output", str(out), "--device", "cpu", "--num-vis", "3",
         "SOLVER.MAX_ITER", str(ITERS), "SOLVER.IMS_PER_BATCH", "8", "SOLVER.WARMUP_ITERS", "5",
         "DATALOADER.NUM_WORKERS", "0"]
    )
    yield out
    register_shapes_datasets()


def _metrics(out):
    with open(out / "metrics.json") as f:
        return [json.loads(line) for line in f]


def test_box_loss_falls_and_evaluation_runs(trained):
    metrics = _metrics(trained)
    losses = [m["loss_dsla_box"] for m in metrics if "loss_dsla_box" in m]
    assert len(losses) >= 2
    # A dead box branch keeps the GIoU loss flat near 1 (see CALIBRATION.md); a learning one falls.
    assert losses[-1] < 0.9 * losses[0]
    evaluated = [m for m in metrics if "bbox/AP" in m]
    assert len(evaluated) == 1 and np.isfinite(evaluated[0]["bbox/AP50"])


def test_trained_model_returns_non_empty_boxes(trained):
    cfg = load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])
    model = build_model(cfg)
    DetectionCheckpointer(model).load(str(trained / "model_final.pth"))
    model.eval()
    record = DatasetCatalog.get("shapes_val")[0]
    image = torch.as_tensor(np.array(Image.open(record["file_name"]).convert("RGB")).transpose(2, 0, 1).copy())
    with torch.no_grad():
        inst = model([{"image": image.float()}])[0]["instances"]
    assert len(inst) > 0
    assert (inst.pred_boxes.area() > 4).all()


def test_demo_draws_boxes_on_an_image(trained, tmp_path):
    record = DatasetCatalog.get("shapes_val")[0]
    out = tmp_path / "demo"
    subprocess.run(
        [
            sys.executable, os.path.join(REPO_ROOT, "demo.py"),
            "--config-file", QUICKSTART,
            "--input", os.path.dirname(record["file_name"]) + "/00000[0-1].png",
            "--output", str(out),
            "--confidence-threshold", "0.0",
            "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", str(trained / "model_final.pth"),
        ],
        check=True,
        cwd=REPO_ROOT,
        env={**os.environ, "DSLA_SHAPES_ROOT": os.path.dirname(os.path.dirname(record["file_name"]))},
    )
    written = sorted(os.listdir(out))
    assert written == ["000000.png", "000001.png"]
    drawn = np.array(Image.open(out / written[0]).convert("RGB"))
    original = np.array(Image.open(record["file_name"]).convert("RGB"))
    assert drawn.shape == original.shape
    assert (drawn != original).any(axis=2).mean() > 0.01


def test_quickstart_writes_a_summary_and_ground_truth_next_to_detections(trained):
    with open(trained / "quickstart_summary.json") as f:
        summary = json.load(f)
    assert summary["device"] == "cpu" and summary["minutes"] > 0
    assert summary["bbox/AP"] == _metrics(trained)[-1]["bbox/AP"]
    written = sorted(os.listdir(trained / "vis"))
    assert written == ["000000.png", "000001.png", "000002.png"]
    image = np.array(Image.open(trained / "vis" / written[0]))
    # Ground truth and detections side by side, with a 4-pixel bar between them.
    assert image.shape[:2] == (160, 2 * 160 + 4)
