"""
Deployment: a DSLA detector traced to TorchScript or ONNX through detectron2's ``TracingAdapter``,
as detectron2's ``tools/deploy/export_model.py`` does with ``--export-method tracing``, and the
check that the exported model gives the eager model's detections.

The exported model takes one image, a float Tensor[3, H, W] of 0-255 pixels in the config's
``INPUT.FORMAT``, at any height and width, and returns the flattened ``Instances`` of detectron2's
adapter: ``pred_boxes`` (Tensor[D, 4], XYXY in input pixels), ``pred_classes`` (Tensor[D]),
``scores`` (Tensor[D]) and ``image_size`` (Tensor[2]).
"""

import logging
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

import detectron2.data.transforms as T
from detectron2.config import CfgNode, instantiate
from detectron2.data.detection_utils import read_image
from detectron2.export import TracingAdapter
from detectron2.modeling import GeneralizedRCNN, build_model

from .checkpoint import AtomicCheckpointer

__all__ = [
    "FORMATS",
    "OUTPUT_NAMES",
    "ExportedModel",
    "build_model_and_sample_image",
    "compare_detections",
    "eager_detections",
    "export_and_check",
    "export_model",
    "load_sample_image",
    "measure_latency",
    "synthetic_image",
    "tracing_adapter",
]

logger = logging.getLogger(__name__)

FORMATS = {"torchscript": "model.ts", "onnx": "model.onnx"}
OUTPUT_NAMES = ("pred_boxes", "pred_classes", "scores", "image_size")
ONNX_OPSET = 17


def synthetic_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 HxWx3 image of noise with a few filled rectangles, for exporting without a sample
    image."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, (height, width, 3), dtype=np.uint8)
    for _ in range(4):
        h, w = rng.integers(height // 8, height // 2 + 1), rng.integers(width // 8, width // 2 + 1)
        y, x = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
        image[y : y + h, x : x + w] = rng.integers(100, 256, 3)
    return image


def load_sample_image(
    input_format: str, augmentations: List[T.Augmentation], path: Optional[str] = None
) -> Tensor:
    """
    The input of the exported model for one image: read in ``input_format`` (or made by
    :func:`synthetic_image`, 480x640, when ``path`` is None) and passed through the test-time
    ``augmentations`` (the resize).

    Returns:
        float Tensor[3, H, W] of 0-255 pixels.
    """
    if path is None:
        image = synthetic_image(480, 640)
        if input_format == "BGR":
            image = image[:, :, ::-1]
    else:
        image = read_image(path, format=input_format)
    image = T.AugmentationList(augmentations)(T.AugInput(image)).apply_image(image)
    return torch.as_tensor(np.ascontiguousarray(image.astype("float32").transpose(2, 0, 1)))


def build_model_and_sample_image(
    cfg, sample_image: Optional[str] = None
) -> Tuple[nn.Module, Tensor]:
    """
    The model of a config with its weights, in eval mode, and its input for one image (see
    :func:`load_sample_image`). ``cfg`` is a YAML config (``CfgNode``: ``MODEL.WEIGHTS``,
    ``INPUT.FORMAT``, the resize of ``DefaultPredictor``) or a LazyConfig
    (``train.init_checkpoint``, ``train.device``, the format and augmentations of
    ``dataloader.test.mapper``).
    """
    if isinstance(cfg, CfgNode):
        model = build_model(cfg)
        weights, input_format = cfg.MODEL.WEIGHTS, cfg.INPUT.FORMAT
        allow_pickle = cfg.MODEL.WEIGHTS_ALLOW_PICKLE
        augmentations = [
            T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST] * 2, cfg.INPUT.MAX_SIZE_TEST)
        ]
    else:
        model = instantiate(cfg.model).to(cfg.train.device)
        weights, input_format = cfg.train.init_checkpoint, cfg.dataloader.test.mapper.image_format
        allow_pickle = cfg.train.get("init_checkpoint_allow_pickle", False)
        augmentations = instantiate(cfg.dataloader.test.mapper.augmentations)
    if weights:
        AtomicCheckpointer(model, allow_pickle=allow_pickle).load(weights)
    else:
        logger.warning("No weights given: exporting a model with random weights")
    image = load_sample_image(input_format, augmentations, sample_image)
    return model.eval(), image.to(model.device)


def tracing_adapter(model: nn.Module, image: Tensor) -> TracingAdapter:
    """
    ``model`` (in eval mode) called on ``[{"image": image}]``, flattened to tensors in and out.
    Without ``height``/``width`` in the input the detections stay in input pixels, as in
    detectron2's export; a two-stage model (DSLA as the first stage of ``GeneralizedRCNN``) is
    called without its final resize, as there.
    """
    inference = None
    if isinstance(model, GeneralizedRCNN):

        def inference(model, inputs):
            return [{"instances": model.inference(inputs, do_postprocess=False)[0]}]

    return TracingAdapter(model, [{"image": image}], inference)


def export_model(model: nn.Module, image: Tensor, fmt: str, output_dir: str) -> str:
    """
    Trace ``model`` on ``image`` and write ``output_dir/model.ts`` or ``output_dir/model.onnx``;
    height and width stay dynamic.

    Args:
        fmt: "torchscript" or "onnx".

    Returns:
        the path of the exported model.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Unknown export format '{fmt}'; expected one of {sorted(FORMATS)}")
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, FORMATS[fmt])
    adapter = tracing_adapter(model.eval(), image)
    if fmt == "torchscript":
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        torch.jit.save(traced, path)
    else:
        # The TorchScript-based exporter: it keeps the traced graph's data-dependent sizes (nonzero,
        # top-k, NMS) dynamic, which is what makes one file work at every input size.
        dynamic_axes = {"image": {1: "height", 2: "width"}}
        dynamic_axes.update({name: {0: "detections"} for name in OUTPUT_NAMES[:-1]})
        torch.onnx.export(
            adapter,
            (image,),
            path,
            dynamo=False,
            input_names=["image"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
        )
    logger.info(f"Exported {type(model).__name__} to {path}")
    return path


class ExportedModel:
    """
    An exported model, ``model.ts`` (TorchScript) or ``model.onnx`` (onnxruntime, CPU), called on
    one image (float Tensor[3, H, W]) and returning its detections: a dict of ``pred_boxes``,
    ``pred_classes``, ``scores``.
    """

    def __init__(self, path: str, num_threads: Optional[int] = None, device: str = "cpu"):
        self.path = path
        if path.endswith(".onnx"):
            import onnxruntime

            options = onnxruntime.SessionOptions()
            if num_threads:
                options.intra_op_num_threads = num_threads
            session = onnxruntime.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )

            def run(image: Tensor) -> Tuple[Tensor, ...]:
                outputs = session.run(list(OUTPUT_NAMES), {"image": image.cpu().numpy()})
                return tuple(torch.from_numpy(x) for x in outputs)

        else:
            module = torch.jit.load(path, map_location=device)

            def run(image: Tensor) -> Tuple[Tensor, ...]:
                with torch.no_grad():
                    return module(image.to(device))

        self._run: Callable[[Tensor], Tuple[Tensor, ...]] = run

    def __call__(self, image: Tensor) -> Dict[str, Tensor]:
        outputs = dict(zip(OUTPUT_NAMES, self._run(image)))
        return {name: outputs[name].cpu() for name in OUTPUT_NAMES[:-1]}


@torch.no_grad()
def eager_detections(model: nn.Module, image: Tensor) -> Dict[str, Tensor]:
    """The eager model's detections on ``image`` in input pixels, in the form :class:`ExportedModel`
    returns."""
    model.eval()
    if isinstance(model, GeneralizedRCNN):
        instances = model.inference([{"image": image}], do_postprocess=False)[0]
    else:
        instances = model([{"image": image}])[0]["instances"]
    instances = instances.to("cpu")
    return {
        "pred_boxes": instances.pred_boxes.tensor,
        "pred_classes": instances.pred_classes,
        "scores": instances.scores,
    }


def compare_detections(
    expected: Dict[str, Tensor],
    actual: Dict[str, Tensor],
    box_atol: float = 1e-2,
    score_atol: float = 1e-4,
) -> Optional[str]:
    """
    Whether two sets of detections (dicts of ``pred_boxes``, ``pred_classes``, ``scores``) agree:
    the same number, classes, and boxes and scores within the tolerances (absolute, in pixels and in
    score).

    Returns:
        None when they agree, otherwise what differs.
    """
    if len(expected["scores"]) != len(actual["scores"]):
        return f"{len(actual['scores'])} detections instead of {len(expected['scores'])}"
    if not torch.equal(expected["pred_classes"].long(), actual["pred_classes"].long()):
        return "classes differ"
    for key, atol in (("pred_boxes", box_atol), ("scores", score_atol)):
        diff = (expected[key].float() - actual[key].float()).abs()
        if diff.numel() and diff.max() > atol:
            return f"{key} differ by up to {diff.max().item():.3g} (tolerance {atol})"
    return None


def export_and_check(
    cfg, fmt: str, output_dir: str, sample_image: Optional[str] = None
) -> Tuple[str, Optional[str]]:
    """
    Export the model of a YAML or LazyConfig (see :func:`build_model_and_sample_image`) traced on
    the sample image (see :func:`export_model`), and run the exported model on that image against
    the eager one.

    Returns:
        the path of the exported model, and None if its detections match the eager model's,
        otherwise what differs (see :func:`compare_detections`).
    """
    model, image = build_model_and_sample_image(cfg, sample_image)
    path = export_model(model, image, fmt, output_dir)
    expected = eager_detections(model, image)
    actual = ExportedModel(path, device=str(model.device))(image)
    mismatch = compare_detections(expected, actual)
    return path, mismatch


def measure_latency(fn: Callable[[], object], reps: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``reps`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
