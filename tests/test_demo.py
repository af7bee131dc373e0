"""demo.py on a COCO-format dataset given with --register-coco."""
import os

import numpy as np
from PIL import Image

from detectron2.data import MetadataCatalog

from conftest import REPO_ROOT, write_coco_dataset

import demo


def test_class_names_of_a_registered_coco_dataset_reach_the_visualizer(tmp_path):
    json_path, image_root = write_coco_dataset(str(tmp_path), num_images=1, num_classes=2)
    out = tmp_path / "out.png"
    demo.main(
        ["--config-file", os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml"), "--input", os.path.join(image_root, "0001.png"),
         "--output", str(out), "--register-coco", "demo_tiny", json_path, image_root, "--dataset", "demo_tiny",
         "--confidence-threshold", "0.0",
         "--opts", "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "MODEL.DSLA.NUM_CLASSES", "2",
         "MODEL.DSLA.SCORE_THRESH_TEST", "0.0"]
    )
    # Without the names, detectron2's Visualizer would label the boxes with class ids.
    assert MetadataCatalog.get("demo_tiny").thing_classes == ["class1", "class2"]
    drawn = np.array(Image.open(out))
    assert drawn.shape == (96, 128, 3)
