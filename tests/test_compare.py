"""tools/compare.py (make compare) end to end on a tiny copy of the shapes dataset."""
import json
import os

import pytest
from PIL import Image

from tools import compare
from dsla.data import register_shapes_datasets


@pytest.fixture
def tiny_shapes(tmp_path):
    register_shapes_datasets(root=str(tmp_path / "shapes"), num_train=16, num_val=6)
    yield tmp_path
    register_shapes_datasets()


def test_trains_both_detectors_and_writes_ap_consistency_and_plots(tiny_shapes):
    out = tiny_shapes / "compare"
    summary = compare.main(
        ["--output", str(out), "--device", "cpu", "SOLVER.MAX_ITER", "6", "SOLVER.IMS_PER_BATCH", "4",
         "SOLVER.WARMUP_ITERS", "2", "DATALOADER.NUM_WORKERS", "0", "MODEL.DSLA.SCORE_THRESH_TEST", "0.0",
         "MODEL.FCOS.SCORE_THRESH_TEST", "0.0"]
    )
    assert set(summary) == {"DSLA", "DSLA-COCO-ranges", "FCOS"}
    for name in ("dsla", "dsla-coco-ranges", "fcos"):
        assert os.path.isfile(out / name / "model_final.pth")
    for result in summary.values():
        assert "bbox/AP" in result["coco"]
        assert result["consistency"]["num_detections"] > 0
    with open(out / "compare_summary.json") as f:
        assert json.load(f).keys() == summary.keys()
    for plot in ("score_vs_iou.png", "consistency.png"):
        with Image.open(out / plot) as im:
            assert im.size[0] > 100 and len(set(im.convert("L").getdata())) > 2
