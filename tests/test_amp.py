"""
Mixed precision: under autocast the head's towers run in low precision while its outputs, the DSLA
labels and the losses are float32. ``SOLVER.AMP.ENABLED`` (LazyConfig ``train.amp.enabled``) trains
with detectron2's AMPTrainer on CUDA and with bfloat16 autocast (CPUAMPTrainer) on the CPU, where it
is refused on a CPU without bfloat16 instructions.
"""

import json
import math
import os
import platform
import re

import numpy as np
import pytest
import torch

from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import EventStorage, get_event_storage

import dsla.modeling.proposal_generator as proposal_generator
from dsla import engine
from dsla.engine import amp
from dsla.modeling import DSLAProposalGenerator
from dsla.utils import precision

from conftest import REPO_ROOT, load_config, short_training_opts

QUICKSTART = "configs/DSLA/dsla_quickstart_shapes.yaml"
needs_cpu_bfloat16 = pytest.mark.skipif(
    not amp.cpu_has_bfloat16(), reason="this CPU has no bfloat16 instructions"
)


@pytest.fixture
def loss_dtypes(monkeypatch):
    """Records the dtypes that reach the DSLA loss functions: {name: (input dtypes..., output
    dtype)}."""
    seen = {}

    def recording(name, fn):
        def wrapped(*args):
            out = fn(*args)
            seen[name] = tuple(a.dtype for a in args if isinstance(a, torch.Tensor)) + (out.dtype,)
            return out

        return wrapped

    monkeypatch.setattr(
        proposal_generator,
        "quality_focal_loss",
        recording("qfl", proposal_generator.quality_focal_loss),
    )
    monkeypatch.setattr(
        proposal_generator,
        "box_regression_loss",
        recording("box", proposal_generator.box_regression_loss),
    )
    return seen


@pytest.fixture
def autocast_in_forward(monkeypatch):
    """Records, at each training forward of the DSLA head, whether CPU autocast was on."""
    seen = []
    check = proposal_generator.check_finite_predictions

    def recording(*args):
        seen.append(torch.is_autocast_enabled("cpu"))
        return check(*args)

    monkeypatch.setattr(proposal_generator, "check_finite_predictions", recording)
    return seen


def _batch():
    g = torch.Generator().manual_seed(0)
    batch = []
    for boxes in ([[10.0, 20, 90, 100], [50, 50, 150, 120]], [[4.0, 4, 40, 60]]):
        inst = Instances((160, 160))
        inst.gt_boxes = Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.arange(len(boxes))
        batch.append({"image": torch.rand(3, 160, 160, generator=g) * 255, "instances": inst})
    return batch


def test_losses_are_float32_and_finite_under_cpu_bfloat16_autocast(loss_dtypes):
    torch.manual_seed(0)
    model = build_model(load_config(QUICKSTART)).train()
    tower_dtypes, head_dtypes = [], []
    head = model.proposal_generator.head
    head.cls_subnet.register_forward_hook(lambda m, i, out: tower_dtypes.append(out.dtype))
    head.register_forward_hook(
        lambda m, i, out: head_dtypes.append((out[0][0].dtype, out[1][0].dtype))
    )

    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model(_batch())
    # Autocast is on: the convolutions ran in bfloat16; the head's outputs are float32.
    assert set(tower_dtypes) == {torch.bfloat16}
    assert head_dtypes == [(torch.float32, torch.float32)]
    assert loss_dtypes["qfl"] == (torch.float32,) * 3
    assert loss_dtypes["box"] == (torch.float32,) * 3
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values()), losses
    assert losses["loss_dsla_box"] > 0

    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_inference_under_cpu_bfloat16_autocast_gives_finite_detections():
    torch.manual_seed(0)
    model = build_model(load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])).eval()
    image = _batch()[0]["image"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        instances = model([{"image": image, "height": 160, "width": 160}])[0]["instances"]
    assert len(instances) > 0
    # float32 scores: bfloat16's 8 significant bits would tie the ranking of many detections.
    assert instances.scores.dtype == instances.pred_boxes.tensor.dtype == torch.float32
    assert (
        torch.isfinite(instances.pred_boxes.tensor).all() and torch.isfinite(instances.scores).all()
    )


def _train_args(tmp_path, device):
    return engine.default_argument_parser().parse_args(
        [
            "--config-file",
            QUICKSTART,
            "MODEL.DEVICE",
            device,
            "SOLVER.AMP.ENABLED",
            "True",
            *short_training_opts(tmp_path / "out", 4, ims_per_batch=4),
        ]
    )


def test_trainer_class_is_detectron2s_amp_trainer_on_cuda_and_bfloat16_autocast_on_the_cpu():
    assert engine.trainer_class(False, "cpu") is SimpleTrainer
    assert engine.trainer_class(False, "cuda") is SimpleTrainer
    assert engine.trainer_class(True, "cuda:1") is AMPTrainer
    if amp.cpu_has_bfloat16():
        assert engine.trainer_class(True, "cpu") is engine.CPUAMPTrainer


@pytest.mark.skipif(
    platform.machine() != "x86_64" or not os.path.exists("/proc/cpuinfo"), reason="x86 Linux"
)
def test_cpu_bfloat16_check_follows_the_cpu_flags_not_onednn_emulation(monkeypatch):
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    has_flags = "avx512_bf16" in flags or "amx_bf16" in flags
    assert amp.cpu_has_bfloat16() == (torch.backends.mkldnn.is_available() and has_flags)

    # An AVX-512 CPU without bfloat16 instructions: oneDNN would emulate bfloat16.
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not amp.cpu_has_bfloat16()
    with pytest.raises(RuntimeError, match=re.escape(amp.cpu_name())):
        amp.check_cpu_bfloat16()


def _amp_config(tmp_path, enabled, opts=()):
    return load_config(
        QUICKSTART,
        [
            "SOLVER.AMP.ENABLED",
            str(enabled),
            "SOLVER.MAX_ITER",
            "4",
            "SOLVER.IMS_PER_BATCH",
            "4",
            "DATALOADER.NUM_WORKERS",
            "0",
            "DATASETS.TEST",
            "()",
            "OUTPUT_DIR",
            str(tmp_path / f"out_amp_{enabled}"),
            *opts,
        ],
    )


def _train(cfg):
    """Train ``cfg`` from seed 0 (weights, data order, augmentation); the losses of each
    iteration."""
    seed_all_rng(0)
    trainer = engine.Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    history = trainer.storage.history
    return {k: [v for v, _ in history(k).values()] for k in ("loss_dsla_cls", "loss_dsla_box")}


@needs_cpu_bfloat16
def test_cpu_amp_trains_in_bfloat16_with_finite_losses_close_to_float32(
    shapes_root, tmp_path, loss_dtypes, autocast_in_forward
):
    fp32 = _train(_amp_config(tmp_path, False))
    assert autocast_in_forward == [False] * 4
    autocast_in_forward.clear()
    bf16 = _train(_amp_config(tmp_path, True))
    assert autocast_in_forward == [True] * 4
    assert loss_dtypes["qfl"] == (torch.float32,) * 3
    assert loss_dtypes["box"] == (torch.float32,) * 3
    for name in fp32:
        assert len(bf16[name]) == 4 and all(math.isfinite(v) for v in bf16[name])
        # Same weights, data and augmentation, and the config's warm-up (as a run starts; at full
        # learning rate AdamW's first steps amplify rounding differences within a few iterations).
        assert bf16[name] == pytest.approx(fp32[name], rel=0.02), name
    assert (tmp_path / "out_amp_True" / "model_final.pth").is_file()


@needs_cpu_bfloat16
def test_cpu_amp_keeps_detectron2s_non_finite_loss_check(shapes_root, tmp_path, monkeypatch):
    losses = DSLAProposalGenerator.losses

    def nan_at_iteration_2(self, *args, **kwargs):
        out = losses(self, *args, **kwargs)
        if get_event_storage().iter == 2:
            out["loss_dsla_box"] = out["loss_dsla_box"] * float("nan")
        return out

    monkeypatch.setattr(DSLAProposalGenerator, "losses", nan_at_iteration_2)
    with pytest.raises(FloatingPointError, match=r"Loss became infinite or NaN at iteration=2!"):
        _train(_amp_config(tmp_path, True))


def test_cpu_amp_without_bfloat16_is_refused_before_the_model_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)

    def build_model(cfg):
        raise AssertionError("the model was built before the bfloat16 check")

    monkeypatch.setattr(engine.Trainer, "build_model", staticmethod(build_model))
    message = rf"SOLVER\.AMP\.ENABLED .*CPU \({re.escape(amp.cpu_name())}\) has no bfloat16"
    with pytest.raises(RuntimeError, match=message):
        engine.Trainer(_amp_config(tmp_path, True))


def _lazy_args(tmp_path, *overrides):
    return engine.default_argument_parser().parse_args(
        [
            "--config-file",
            os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py"),
            f"train.output_dir={tmp_path / 'lazy'}",
            "train.amp.enabled=True",
            "train.max_iter=3",
            "train.log_period=1",
            "train.device=cpu",
            "train.eval_period=0",
            "dataloader.train.total_batch_size=2",
            "dataloader.train.num_workers=0",
            *overrides,
        ]
    )


@needs_cpu_bfloat16
def test_lazy_config_cpu_amp_trains_in_bfloat16_with_float32_losses(
    shapes_root, tmp_path, loss_dtypes, autocast_in_forward
):
    engine.main(_lazy_args(tmp_path))
    assert autocast_in_forward == [True] * 3
    assert loss_dtypes["qfl"] == (torch.float32,) * 3
    with open(tmp_path / "lazy" / "metrics.json") as f:
        trained = [json.loads(line) for line in f if "loss_dsla_box" in line]
    assert [m["iteration"] for m in trained] == [0, 1, 2]
    assert all(math.isfinite(m["loss_dsla_cls"] + m["loss_dsla_box"]) for m in trained)
    assert torch.load(tmp_path / "lazy" / "model_final.pth", weights_only=False)["iteration"] == 2


def test_lazy_config_cpu_amp_without_bfloat16_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: False)
    with pytest.raises(RuntimeError, match=r"train\.amp\.enabled.*has no bfloat16"):
        engine.main(_lazy_args(tmp_path))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_amp_training_on_cuda_keeps_the_losses_in_float32(shapes_root, tmp_path, loss_dtypes):
    engine.main(_train_args(tmp_path, "cuda"))
    assert loss_dtypes["qfl"] == (torch.float32,) * 3
    assert loss_dtypes["box"] == (torch.float32,) * 3
    with open(tmp_path / "out" / "metrics.json") as f:
        metrics = [json.loads(line) for line in f]
    trained = [m for m in metrics if "loss_dsla_cls" in m]
    assert trained and all(
        math.isfinite(m["loss_dsla_cls"]) and math.isfinite(m["loss_dsla_box"]) for m in trained
    )
    assert (tmp_path / "out" / "model_final.pth").is_file()


def _detections(model, inputs):
    with torch.no_grad():
        return [out["instances"] for out in model.eval()(inputs)]


def test_channels_last_models_give_the_detections_of_the_default_layout():
    cfg = load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])
    torch.manual_seed(0)
    plain = engine.Trainer.build_model(cfg)
    cfg.defrost()
    cfg.MODEL.CHANNELS_LAST = True
    torch.manual_seed(0)
    last = engine.Trainer.build_model(cfg)
    conv = last.backbone.bottom_up.stage1[0]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not plain.backbone.bottom_up.stage1[0].weight.is_contiguous(
        memory_format=torch.channels_last
    )
    image = torch.randint(0, 255, (3, 160, 160), dtype=torch.uint8)
    (a,), (b,) = _detections(plain, [{"image": image}]), _detections(last, [{"image": image}])
    assert len(a) == len(b) > 0
    assert torch.allclose(a.pred_boxes.tensor, b.pred_boxes.tensor, atol=1e-3)


@needs_cpu_bfloat16
def test_test_amp_evaluates_under_bfloat16_autocast_with_detections_close_to_float32(monkeypatch):
    from dsla.checkpoint import Predictor

    cfg = load_config(QUICKSTART, ["MODEL.DSLA.SCORE_THRESH_TEST", "0.0"])
    image = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    torch.manual_seed(0)
    fp32 = Predictor(cfg)(image)["instances"]
    cfg.defrost()
    cfg.TEST.AMP.ENABLED = True
    torch.manual_seed(0)
    predictor = Predictor(cfg)
    seen = []
    head = predictor.model.proposal_generator.head
    head.register_forward_hook(lambda m, i, o: seen.append(torch.is_autocast_cpu_enabled()))
    bf16 = predictor(image)["instances"]
    assert seen == [True]
    assert len(bf16) > 0 and abs(len(bf16) - len(fp32)) <= max(2, len(fp32) // 10)
    assert torch.allclose(bf16.scores[:5], fp32.scores[:5], atol=0.02)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    with pytest.raises(RuntimeError, match="bfloat16"):
        predictor(image)


def test_the_demos_train_in_bfloat16_where_the_cpu_has_it_unless_told_not_to(monkeypatch):
    from dsla.engine import demo

    seen = []

    def main(args):
        seen.append(list(args.opts))
        raise StopIteration

    monkeypatch.setattr(demo, "main", main)
    for has_bf16, opts, expected in (
        (True, [], ["SOLVER.AMP.ENABLED", "True"]),
        (
            True,
            ["SOLVER.AMP.ENABLED", "False"],
            ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.ENABLED", "False"],
        ),
        (False, [], []),
    ):
        monkeypatch.setattr(demo, "cpu_has_bfloat16", lambda h=has_bf16: h)
        with pytest.raises(StopIteration):
            demo.train_and_show(os.path.join(REPO_ROOT, QUICKSTART), "/tmp/unused", "cpu", opts)
        assert seen[-1][4:] == expected


@needs_cpu_bfloat16
def test_the_fcos_baseline_trains_under_cpu_bfloat16_autocast_with_float32_losses():
    cfg = load_config("configs/FCOS-Baseline/fcos_quickstart_shapes.yaml")
    model = build_model(cfg).train()
    image = torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8)
    inst = Instances((128, 128))
    inst.gt_boxes = Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0], [70.0, 20.0, 120.0, 90.0]]))
    inst.gt_classes = torch.tensor([0, 2])
    with EventStorage(), torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model([{"image": image, "instances": inst}] * 2)
    assert set(losses) == {"loss_fcos_cls", "loss_fcos_loc", "loss_fcos_ctr"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
