import importlib.util
import json
import os
import uuid

import matplotlib.image
import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from dsla import get_dsla_cfg

TOOL = os.path.join(os.path.dirname(__file__), "..", "tools", "analyze_consistency.py")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("analyze_consistency", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_pairs(path, scores, ious, image_index, gt_index):
    np.savez(
        path,
        scores=np.asarray(scores, dtype=np.float32),
        ious=np.asarray(ious, dtype=np.float32),
        classes=np.zeros(len(scores), dtype=np.int64),
        image_index=np.asarray(image_index),
        gt_index=np.asarray(gt_index),
        iou_threshold=0.5,
        topk=np.array([10, 100]),
    )
    return str(path)


def test_plots_and_summary_from_saved_pairs(tool, tmp_path):
    rng = np.random.default_rng(0)
    ious = rng.uniform(0.0, 1.0, 500)
    image_index = rng.integers(0, 20, 500)
    gt_index = np.where(ious > 0, rng.integers(0, 3, 500), -1)
    noisy_ious = np.clip(ious + rng.normal(0, 0.1, 500), 0, 1)
    consistent = write_pairs(tmp_path / "a.npz", noisy_ious, ious, image_index, gt_index)
    random = write_pairs(tmp_path / "b.npz", rng.uniform(0, 1, 500), ious, image_index, gt_index)
    # Too few matched detections for a correlation: its figures are undefined, and must still plot.
    single = write_pairs(tmp_path / "c.npz", [0.9], [0.8], [0], [0])
    output = tmp_path / "out"

    args = tool.argument_parser().parse_args(
        [
            "--output",
            str(output),
            "--pairs",
            "DSLA",
            consistent,
            "--pairs",
            "FCOS",
            random,
            "--pairs",
            "one",
            single,
        ]
    )
    tool.main(args)

    for png in ["score_vs_iou.png", "consistency.png"]:
        pixels = matplotlib.image.imread(str(output / png))
        assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
        assert pixels.reshape(-1, pixels.shape[-1]).std(axis=0).max() > 0.05
    summary = json.loads((output / "summary.json").read_text())
    models = summary["models"]
    assert list(models) == ["DSLA", "FCOS", "one"]
    assert models["DSLA"]["pearson"] > 0.8 > abs(models["FCOS"]["pearson"])
    assert models["one"]["pearson"] is None
    assert models["one"]["num_matched_detections"] == 1
    # Scores that follow IoU rank each object's detections better than chance; random ones about at
    # chance.
    assert models["DSLA"]["gt_pair_concordance"] > 0.7 > models["FCOS"]["gt_pair_concordance"] > 0.3
    assert models["one"]["gt_pair_concordance"] is None


def test_model_or_pairs_required(tool, tmp_path):
    with pytest.raises(SystemExit):
        tool.main(tool.argument_parser().parse_args(["--output", str(tmp_path)]))


def test_runs_a_model_on_a_registered_coco_dataset(tool, tmp_path):
    config = os.path.join(
        os.path.dirname(TOOL), "..", "configs", "FCOS-Baseline", "fcos_R_50_FPN_1x.yaml"
    )
    # Untrained model: boxes one stride wide around every point, every score kept.
    opts = [
        "MODEL.DEVICE",
        "cpu",
        "MODEL.FCOS.BBOX_REG_INIT_BIAS",
        "1.0",
        "MODEL.FCOS.SCORE_THRESH_TEST",
        "0.0",
    ]
    opts += [
        "INPUT.MIN_SIZE_TEST",
        "128",
        "INPUT.MAX_SIZE_TEST",
        "160",
        "DATALOADER.NUM_WORKERS",
        "0",
    ]
    cfg = get_dsla_cfg(config, opts)
    torch.manual_seed(0)
    weights = str(tmp_path / "model.pth")
    torch.save(build_model(cfg).state_dict(), weights)

    images, annotations = [], []
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 256, (128, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.jpg")
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 128, "width": 160})
        box = {"bbox": [4, 4, 16, 16], "area": 256, "iscrowd": 0}
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, **box})
    coco = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))

    name = f"consistency_test_{uuid.uuid4().hex}"
    output = tmp_path / "out"
    args = ["--register-coco", name, str(tmp_path / "coco.json"), str(tmp_path), "--dataset", name]
    args += ["--output", str(output), "--model", "FCOS", config, weights, *opts]
    try:
        summaries = tool.main(tool.argument_parser().parse_args(args))
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)

    assert summaries["FCOS"]["num_detections"] == 200  # TEST.DETECTIONS_PER_IMAGE on each image
    assert (output / "FCOS" / "score_iou_pairs.npz").stat().st_size > 0
    assert (output / "score_vs_iou.png").stat().st_size > 0
    assert json.loads((output / "summary.json").read_text())["dataset"] == name
