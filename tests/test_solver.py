"""dsla.solver: SGD / AdamW parameter groups and whole-model gradient clipping."""

import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from dsla import add_dsla_config
from dsla.layers import ModulatedDeformConv2d
from dsla.solver import build_optimizer, get_param_groups

from conftest import load_config


class _Transformerish(nn.Module):
    """One parameter of every kind the optimizer distinguishes."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm2d(8)
        self.ln = nn.LayerNorm(8)
        self.linear = nn.Linear(8, 8)
        self.absolute_pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(torch.zeros(169, 3))


def _hyperparams(optimizer, model):
    """Parameter name -> (lr, weight_decay)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: (group["lr"], group["weight_decay"])
        for group in optimizer.param_groups
        for p in group["params"]
    }


def _hyperparams_of(param_groups, model):
    return _hyperparams(torch.optim.SGD(param_groups, lr=1.0), model)


def _solver_cfg(*opts):
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


def test_adamw_gives_no_weight_decay_to_parameters_named_by_the_no_weight_decay_keys():
    cfg = _solver_cfg(
        "SOLVER.OPTIMIZER", "ADAMW", "SOLVER.BASE_LR", 1e-4, "SOLVER.WEIGHT_DECAY", 0.05
    )
    cfg.SOLVER.WEIGHT_DECAY_NORM = 0.05
    cfg.SOLVER.NO_WEIGHT_DECAY_KEYS = ["absolute_pos_embed", "relative_position_bias_table", "ln"]
    model = _Transformerish()
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.9, 0.999)
    groups = _hyperparams(optimizer, model)
    # By name, not by module type: the GroupNorm and BatchNorm (no key in their names) keep the
    # weight decay.
    no_decay = {"ln.weight", "ln.bias", "absolute_pos_embed", "attn.relative_position_bias_table"}
    for name, (lr, weight_decay) in groups.items():
        assert lr == pytest.approx(1e-4)
        assert weight_decay == (0.0 if name in no_decay else 0.05), name
    assert set(groups) == {n for n, _ in model.named_parameters()}


class _Head(nn.Module):
    """Conv + GroupNorm, a BatchNorm, a DCNv2 with its own bias, as in the ResNet DCN models."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.gn = nn.GroupNorm(2, 8)
        self.bn = nn.BatchNorm2d(8)
        self.dcn = ModulatedDeformConv2d(8, 8, 3, padding=1, bias=True)


def test_mmcv_bias_rules_skip_the_biases_of_norm_layers_and_deformable_convs():
    model = _Head()
    params = get_param_groups(
        model,
        0.01,
        1e-4,
        weight_decay_norm=1e-4,
        bias_lr_factor=2.0,
        weight_decay_bias=0.0,
        bias_rules_skip_norm_and_dcn=True,
    )
    groups = _hyperparams_of(params, model)
    assert groups["conv.weight"] == (pytest.approx(0.01), 1e-4)
    assert groups["conv.bias"] == (pytest.approx(0.02), 0.0)
    for norm in ("gn", "bn"):
        assert groups[f"{norm}.weight"] == (pytest.approx(0.01), 1e-4)
        assert groups[f"{norm}.bias"] == (pytest.approx(0.01), 1e-4)
    # mmcv exempts the deformable conv's own bias, not the bias of the plain conv that predicts its
    # offsets.
    assert groups["dcn.bias"] == (pytest.approx(0.01), 1e-4)
    assert groups["dcn.conv_offset.bias"] == (pytest.approx(0.02), 0.0)
    assert groups["dcn.weight"] == groups["dcn.conv_offset.weight"] == (pytest.approx(0.01), 1e-4)


def test_detectron2_bias_rules_cover_every_bias():
    model = _Head()
    groups = _hyperparams_of(
        get_param_groups(
            model, 0.01, 1e-4, weight_decay_norm=0.0, bias_lr_factor=2.0, weight_decay_bias=0.0
        ),
        model,
    )
    for name in ("conv.bias", "gn.bias", "bn.bias", "dcn.bias", "dcn.conv_offset.bias"):
        assert groups[name] == (pytest.approx(0.02), 0.0), name
    assert groups["gn.weight"] == (pytest.approx(0.01), 0.0)


def test_r50_config_gives_the_logged_lr_and_weight_decay_to_each_kind_of_parameter():
    cfg = load_config("configs/DSLA/dsla_R_50_FPN_1x.yaml", ["MODEL.DSLA.NUM_CLASSES", 3])
    model = build_model(cfg)
    groups = _hyperparams(build_optimizer(cfg, model), model)
    head = "proposal_generator.head."
    assert groups[head + "cls_subnet.0.weight"] == (pytest.approx(0.01), 1e-4)
    assert groups[head + "cls_score.bias"] == (pytest.approx(0.02), 0.0)
    assert (
        groups[head + "cls_subnet.1.weight"]
        == groups[head + "cls_subnet.1.bias"]
        == (pytest.approx(0.01), 1e-4)
    )
    assert groups["backbone.fpn_lateral3.bias"] == (pytest.approx(0.02), 0.0)


def test_sgd_keeps_detectron2s_bias_and_norm_options():
    cfg = _solver_cfg("SOLVER.BASE_LR", 0.01, "SOLVER.WEIGHT_DECAY", 1e-4)
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    model = _Transformerish()
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    groups = _hyperparams(optimizer, model)
    assert groups["conv.weight"] == (pytest.approx(0.01), 1e-4)
    assert groups["conv.bias"] == (pytest.approx(0.02), 0.0)
    assert groups["gn.weight"] == (pytest.approx(0.01), 0.0)
    assert groups["gn.bias"] == (pytest.approx(0.02), 0.0)
    assert groups["attn.relative_position_bias_table"] == (pytest.approx(0.01), 1e-4)


def test_full_model_clipping_bounds_the_norm_of_all_gradients_together():
    cfg = _solver_cfg("SOLVER.BASE_LR", 1.0, "SOLVER.MOMENTUM", 0.0, "SOLVER.WEIGHT_DECAY", 0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    grads = [torch.full_like(p, 3.0) for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g.clone()
    build_optimizer(cfg, model).step()
    steps = [b - p.detach() for b, p in zip(before, model.parameters())]
    # One scale for all parameters (the direction is kept), total norm = CLIP_VALUE.
    total = torch.linalg.vector_norm(torch.cat([s.flatten() for s in steps]))
    assert total == pytest.approx(1.0, rel=1e-4)
    scale = steps[0].flatten()[0] / 3.0
    for s, g in zip(steps, grads):
        torch.testing.assert_close(s, g * scale)


def test_full_model_clipping_reports_the_norm_and_the_clipped_steps_to_the_event_storage():
    cfg = _solver_cfg("SOLVER.BASE_LR", 0.1, "SOLVER.MOMENTUM", 0.0, "SOLVER.WEIGHT_DECAY", 0.0)
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "full_model"
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 5.0
    model = nn.Linear(3, 1, bias=False)
    optimizer = build_optimizer(cfg, model)
    # Gradient norms 2 (under the clip), 12 (clipped), 4: one clipped step.
    norms = []
    with EventStorage() as storage:
        for value in (2.0, 12.0, 4.0):
            model.weight.grad = torch.tensor([[value, 0.0, 0.0]])
            optimizer.step()
            norms.append(storage.history("grad_norm").latest())
            storage.step()
        assert storage.history("grad_clipped_steps").values()[-1][0] == 1
        assert [v for v, _ in storage.history("grad_norm_max").values()] == [2.0, 12.0, 12.0]
    assert norms == pytest.approx([2.0, 12.0, 4.0])
    # Outside a training loop there is no storage and the step still clips.
    model.weight.grad = torch.tensor([[30.0, 40.0, 0.0]])
    before = model.weight.detach().clone()
    optimizer.step()
    assert torch.linalg.vector_norm(before - model.weight.detach()) == pytest.approx(0.5)


def test_per_parameter_clipping_is_still_detectron2s():
    cfg = _solver_cfg(
        "SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value"
    )
    optimizer = build_optimizer(cfg, nn.Linear(2, 2))
    assert type(optimizer).__name__ == "SGDWithGradientClip"


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_solver_cfg("SOLVER.OPTIMIZER", "LAMB"), nn.Linear(2, 2))


def test_swin_config_excludes_swin_norms_and_relative_position_tables_from_weight_decay():
    cfg = load_config(
        "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml",
        ["MODEL.SWIN.NAME", "swin_tiny_patch4_window7_224"],
    )
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = _hyperparams(optimizer, model)
    swin = "backbone.bottom_up."
    assert groups[swin + "layers.2.blocks.5.attn.relative_position_bias_table"] == (
        pytest.approx(1e-4),
        0.0,
    )
    assert groups[swin + "layers.2.blocks.5.norm1.weight"][1] == 0.0
    assert groups[swin + "layers.1.downsample.norm.bias"][1] == 0.0
    assert groups[swin + "patch_embed.norm.weight"][1] == 0.0
    assert groups[swin + "out_norms.stage3.weight"][1] == 0.0
    assert groups[swin + "layers.2.blocks.5.attn.qkv.weight"] == (pytest.approx(1e-4), 0.05)
    # Biases are decayed like weights in the authors' AdamW recipe.
    assert groups[swin + "layers.2.blocks.5.attn.qkv.bias"] == (pytest.approx(1e-4), 0.05)
    assert groups["proposal_generator.head.cls_score.weight"] == (pytest.approx(1e-4), 0.05)
    # The head's GroupNorms have no "norm" in their names: decayed, as the authors trained.
    assert groups["proposal_generator.head.cls_subnet.1.weight"] == (pytest.approx(1e-4), 0.05)
    assert groups["proposal_generator.head.cls_subnet.1.bias"] == (pytest.approx(1e-4), 0.05)
