"""demo.py on a COCO-format dataset given with --register-coco."""

import logging
import os
import runpy

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import MetadataCatalog

from conftest import REPO_ROOT, write_coco_dataset

QUICKSTART = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml")


@pytest.fixture
def demo_main():
    return runpy.run_path(os.path.join(REPO_ROOT, "demo.py"))["main"]


@pytest.fixture
def dsla_warnings(caplog):
    """Warnings of the "dsla" loggers, which detectron2's setup_logger keeps from propagating to the
    root."""
    logger = logging.getLogger("dsla")
    logger.addHandler(caplog.handler)
    yield lambda: [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    logger.removeHandler(caplog.handler)


def test_class_names_of_a_registered_coco_dataset_reach_the_visualizer(tmp_path, demo_main):
    json_path, image_root = write_coco_dataset(str(tmp_path), num_images=1, num_classes=2)
    out = tmp_path / "out.png"
    demo_main(
        [
            "--config-file",
            QUICKSTART,
            "--input",
            os.path.join(image_root, "0001.png"),
            "--output",
            str(out),
            "--register-coco",
            "demo_tiny",
            json_path,
            image_root,
            "--dataset",
            "demo_tiny",
            "--confidence-threshold",
            "0.0",
            "--opts",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            "",
            "MODEL.DSLA.NUM_CLASSES",
            "2",
            "MODEL.DSLA.SCORE_THRESH_TEST",
            "0.0",
        ]
    )
    # Without the names, detectron2's Visualizer would label the boxes with class ids.
    assert MetadataCatalog.get("demo_tiny").thing_classes == ["class1", "class2"]
    drawn = np.array(Image.open(out))
    assert drawn.shape == (96, 128, 3)


def test_random_weights_and_a_missing_gpu_are_warned_about_and_the_demo_runs_on_the_cpu(
    tmp_path, demo_main, dsla_warnings, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _, image_root = write_coco_dataset(str(tmp_path), num_images=1)
    out = tmp_path / "out.png"
    demo_main(
        [
            "--config-file",
            QUICKSTART,
            "--input",
            os.path.join(image_root, "0001.png"),
            "--output",
            str(out),
            "--opts",
            "MODEL.DEVICE",
            "cuda",
            "MODEL.WEIGHTS",
            "",
        ]
    )
    assert out.is_file()
    warnings = dsla_warnings()
    assert len(warnings) == 2, warnings
    assert "CUDA is not available; running on the CPU" in warnings[0]
    assert "MODEL.WEIGHTS is empty: the model has random weights" in warnings[1]


def test_trained_weights_give_no_random_weights_warning(tmp_path, demo_main, dsla_warnings):
    weights = tmp_path / "model.pth"
    torch.save({"model": {}}, weights)
    _, image_root = write_coco_dataset(str(tmp_path), num_images=1)
    demo_main(
        [
            "--config-file",
            QUICKSTART,
            "--input",
            os.path.join(image_root, "0001.png"),
            "--opts",
            "MODEL.DEVICE",
            "cpu",
            "MODEL.WEIGHTS",
            str(weights),
        ]
    )
    assert not any("random weights" in w for w in dsla_warnings())


def test_require_gpu_makes_a_missing_gpu_an_error(tmp_path, demo_main, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="--require-gpu was given, but CUDA is not available"):
        demo_main(
            [
                "--config-file",
                QUICKSTART,
                "--input",
                str(tmp_path),
                "--require-gpu",
                "--opts",
                "MODEL.DEVICE",
                "cuda",
            ]
        )
