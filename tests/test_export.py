"""
A DSLA model traced at one size (TorchScript, and ONNX run by onnxruntime) gives the eager model's
detections at smaller, larger and odd sizes; tools/export_model.py exports, checks and says so.
"""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.modeling import build_model

from dsla import export
from dsla.export import ExportedModel, compare_detections, eager_detections, export_model
from tools import export_model as export_tool

from conftest import REPO_ROOT, load_config

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"
# Random weights score about 0.01, so the threshold is lowered to have detections. 100 candidates
# per level are fewer than the P3 points at every size below but more than the P4 points at the
# tracing size (8x10): the clamp of the top-k has to follow the input size both ways.
OPTS = ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0", "MODEL.DSLA.TOPK_CANDIDATES_TEST", "100"]
TRACE_SIZE = (128, 160)
SIZES = [TRACE_SIZE, (64, 64), (97, 131), (200, 240), (33, 257)]


def _image(height, width, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed)) * 255


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(load_config(QUICKSTART, OPTS)).eval()


@pytest.fixture(scope="module", params=["torchscript", "onnx"])
def exported(request, model, tmp_path_factory):
    path = export_model(
        model, _image(*TRACE_SIZE), request.param, str(tmp_path_factory.mktemp(request.param))
    )
    return ExportedModel(path)


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
def test_exported_model_gives_the_eager_detections_at_every_size(model, exported, size):
    image = _image(*size, seed=1)
    expected = eager_detections(model, image)
    assert len(expected["scores"]) > 0
    actual = exported(image)
    assert compare_detections(expected, actual) is None
    assert (
        actual["pred_boxes"][:, 2].max() <= size[1] and actual["pred_boxes"][:, 3].max() <= size[0]
    )


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_dsla_as_first_stage_of_generalized_rcnn_exports_too(fmt, tmp_path):
    two_stage = [
        "MODEL.META_ARCHITECTURE",
        "GeneralizedRCNN",
        "MODEL.ROI_HEADS.NAME",
        "StandardROIHeads",
        "MODEL.ROI_HEADS.IN_FEATURES",
        "['p3', 'p4', 'p5']",
        "MODEL.ROI_HEADS.NUM_CLASSES",
        "4",
        "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
        "0.0",
        "MODEL.ROI_BOX_HEAD.NAME",
        "FastRCNNConvFCHead",
        "MODEL.ROI_BOX_HEAD.NUM_FC",
        "1",
        "MODEL.ROI_BOX_HEAD.FC_DIM",
        "32",
        "MODEL.RPN.POST_NMS_TOPK_TEST",
        "50",
    ]
    torch.manual_seed(0)
    model = build_model(load_config(QUICKSTART, [*OPTS, *two_stage])).eval()
    exported = ExportedModel(export_model(model, _image(*TRACE_SIZE), fmt, str(tmp_path)))
    image = _image(97, 131, seed=1)
    expected = eager_detections(model, image)
    assert len(expected["scores"]) > 0
    assert compare_detections(expected, exported(image)) is None


def test_compare_detections_names_what_differs():
    dets = {
        "pred_boxes": torch.tensor([[0.0, 0, 4, 4]]),
        "pred_classes": torch.tensor([1]),
        "scores": torch.tensor([0.5]),
    }
    assert compare_detections(dets, dets) is None
    assert "scores differ" in compare_detections(dets, {**dets, "scores": torch.tensor([0.6])})
    assert "classes differ" in compare_detections(dets, {**dets, "pred_classes": torch.tensor([2])})
    assert "0 detections instead of 1" in compare_detections(
        dets, {k: v[:0] for k, v in dets.items()}
    )


def test_export_tool_writes_the_model_and_checks_it_on_the_sample_image(tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(
        tmp_path / "sample.png"
    )
    argv = [
        "--config-file",
        os.path.join(REPO_ROOT, QUICKSTART),
        "--format",
        "torchscript",
        "--output",
        str(tmp_path / "out"),
        "--sample-image",
        str(tmp_path / "sample.png"),
        "MODEL.DEVICE",
        "cpu",
        *OPTS,
    ]
    assert export_tool.main(argv) == 0
    # The sample image is resized as DefaultPredictor does (short side 160), and the file runs at
    # another size.
    traced = ExportedModel(str(tmp_path / "out" / "model.ts"))
    assert len(traced(_image(96, 100))["scores"]) > 0


def test_export_tool_takes_a_lazy_config_with_key_value_overrides(tmp_path):
    argv = [
        "--config-file",
        os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py"),
        "--format",
        "onnx",
        "--output",
        str(tmp_path),
        "train.device=cpu",
        "model.proposal_generator.score_thresh_test=0.0",
    ]
    assert export_tool.main(argv) == 0
    assert len(ExportedModel(str(tmp_path / "model.onnx"))(_image(96, 100))["scores"]) > 0


def test_export_tool_fails_when_the_exported_model_disagrees(tmp_path, monkeypatch):
    run = ExportedModel.__call__

    def shifted_boxes(self, image):
        out = run(self, image)
        return {**out, "pred_boxes": out["pred_boxes"] + 1.0}

    monkeypatch.setattr(export.ExportedModel, "__call__", shifted_boxes)
    argv = [
        "--config-file",
        os.path.join(REPO_ROOT, QUICKSTART),
        "--format",
        "onnx",
        "--output",
        str(tmp_path),
        "MODEL.DEVICE",
        "cpu",
        *OPTS,
    ]
    assert export_tool.main(argv) == 1
    assert (tmp_path / "model.onnx").exists()
