import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog

from dsla import get_dsla_cfg
from dsla.data import register_shapes_datasets

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(config_file, opts=()):
    """A DSLA config from a YAML under the repo root, for the CPU, with no pretrained weights."""
    return get_dsla_cfg(
        os.path.join(REPO_ROOT, config_file), ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", *opts]
    )


def write_coco_dataset(root, num_images=4, size=(96, 128), num_classes=2, seed=0):
    """
    A tiny COCO-format dataset of filled rectangles on noise, written under ``root``.

    Returns:
        (json_path, image_root)
    """
    rng = np.random.default_rng(seed)
    image_root = os.path.join(root, "images")
    os.makedirs(image_root, exist_ok=True)
    height, width = size
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        pixels = rng.integers(0, 60, size=(height, width, 3), dtype=np.uint8)
        for _ in range(2):
            w, h = rng.integers(16, width // 2), rng.integers(16, height // 2)
            x, y = rng.integers(0, width - w), rng.integers(0, height - h)
            category = int(rng.integers(1, num_classes + 1))
            pixels[y : y + h, x : x + w] = (200, 80 * category, 40)
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": [float(x), float(y), float(w), float(h)],
                    "area": float(w * h),
                    "iscrowd": 0,
                }
            )
        file_name = f"{image_id:04d}.png"
        Image.fromarray(pixels).save(os.path.join(image_root, file_name))
        images.append({"id": image_id, "file_name": file_name, "height": height, "width": width})
    categories = [{"id": i, "name": f"class{i}"} for i in range(1, num_classes + 1)]
    json_path = os.path.join(root, "annotations.json")
    with open(json_path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return json_path, image_root


def write_voc_xml(path, filename, size, objects):
    """A VOC annotation: ``objects`` of (name, xmin, ymin, xmax, ymax)."""
    width, height = size
    body = "".join(
        f"<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{x0}</xmin>"
        f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for name, x0, y0, x1, y1 in objects
    )
    with open(path, "w") as f:
        f.write(
            f"<annotation><filename>{filename}</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{body}</annotation>"
        )


def short_training_opts(output_dir, max_iter, ims_per_batch=2, warmup_iters=1, evaluate=False):
    """
    Config overrides of a training run of ``max_iter`` iterations that writes to ``output_dir``:
    batches of ``ims_per_batch`` images loaded in the main process, ``warmup_iters`` of warmup, and
    no evaluation unless ``evaluate`` (the config's DATASETS.TEST is then kept).
    """
    opts = ["SOLVER.MAX_ITER", str(max_iter), "SOLVER.IMS_PER_BATCH", str(ims_per_batch)]
    opts += ["SOLVER.WARMUP_ITERS", str(warmup_iters), "DATALOADER.NUM_WORKERS", "0"]
    if not evaluate:
        opts += ["DATASETS.TEST", "()"]
    return [*opts, "OUTPUT_DIR", str(output_dir)]


SMALL_SHAPES = {"num_train": 16, "num_val": 4}


@pytest.fixture
def shapes_root(tmp_path):
    """
    A small copy of the shapes dataset registered as shapes_train / shapes_val, generated here once
    so that the training processes a test starts find it ready; the default registration is restored
    afterwards.
    """
    root = tmp_path / "shapes"
    register_shapes_datasets(root=str(root), **SMALL_SHAPES)
    DatasetCatalog.get("shapes_train")
    DatasetCatalog.get("shapes_val")
    yield root
    register_shapes_datasets()


def shapes_env(root):
    """Environment for a subprocess (train_net.py) that registers the same small shapes dataset."""
    return {
        **os.environ,
        "DSLA_SHAPES_ROOT": str(root),
        "DSLA_SHAPES_NUM_TRAIN": str(SMALL_SHAPES["num_train"]),
        "DSLA_SHAPES_NUM_VAL": str(SMALL_SHAPES["num_val"]),
        # One intra-op thread per process: on two cores, more threads only wait for each other.
        "OMP_NUM_THREADS": "1",
    }


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    """
    The tests' tensors and models are small: one intra-op thread is as fast, and many times faster
    when another process shares the cores (threads then wait on each other at every op).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
