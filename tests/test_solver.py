"""dsla.solver: SGD / AdamW parameter groups and whole-model gradient clipping."""
import pytest
import torch
from torch import nn

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from conftest import load_config
from dsla import add_dsla_config
from dsla.solver import build_optimizer


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
        names[id(p)]: (group["lr"], group["weight_decay"]) for group in optimizer.param_groups for p in group["params"]
    }


def _solver_cfg(*opts):
    cfg = get_cfg()
    add_dsla_config(cfg)
    cfg.merge_from_list(list(opts))
    return cfg


def test_adamw_gives_no_weight_decay_to_norms_position_embeddings_and_relative_position_tables():
    cfg = _solver_cfg("SOLVER.OPTIMIZER", "ADAMW", "SOLVER.BASE_LR", 1e-4, "SOLVER.WEIGHT_DECAY", 0.05)
    model = _Transformerish()
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = _hyperparams(optimizer, model)
    norms = {f"{m}.{p}" for m in ("gn", "bn", "ln") for p in ("weight", "bias")}
    no_decay = norms | {"absolute_pos_embed", "attn.relative_position_bias_table"}
    for name, (lr, weight_decay) in groups.items():
        assert lr == pytest.approx(1e-4)
        assert weight_decay == (0.0 if name in no_decay else 0.05), name
    assert set(groups) == {n for n, _ in model.named_parameters()}


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
    assert groups["attn.relative_position_bias_table"] == (pytest.approx(0.01), 0.0)


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


def test_per_parameter_clipping_is_still_detectron2s():
    cfg = _solver_cfg("SOLVER.CLIP_GRADIENTS.ENABLED", True, "SOLVER.CLIP_GRADIENTS.CLIP_TYPE", "value")
    optimizer = build_optimizer(cfg, nn.Linear(2, 2))
    assert type(optimizer).__name__ == "SGDWithGradientClip"


def test_unknown_optimizer_is_an_error():
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(_solver_cfg("SOLVER.OPTIMIZER", "LAMB"), nn.Linear(2, 2))


def test_swin_config_excludes_swin_norms_and_relative_position_tables_from_weight_decay():
    cfg = load_config(
        "configs/DSLA/dsla_Swin_S_FPN_ms_3x.yaml",
        ["MODEL.SWIN.NAME", "swin_tiny_patch4_window7_224", "MODEL.SWIN.PRETRAINED_WEIGHTS", ""],
    )
    model = build_model(cfg)
    optimizer = build_optimizer(cfg, model)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = _hyperparams(optimizer, model)
    swin = "backbone.bottom_up."
    assert groups[swin + "layers.2.blocks.5.attn.relative_position_bias_table"] == (pytest.approx(1e-4), 0.0)
    assert groups[swin + "layers.2.blocks.5.norm1.weight"][1] == 0.0
    assert groups[swin + "layers.1.downsample.norm.bias"][1] == 0.0
    assert groups[swin + "patch_embed.norm.weight"][1] == 0.0
    assert groups[swin + "out_norms.stage3.weight"][1] == 0.0
    assert groups[swin + "layers.2.blocks.5.attn.qkv.weight"] == (pytest.approx(1e-4), 0.05)
    # Biases are decayed like weights in the authors' AdamW recipe.
    assert groups[swin + "layers.2.blocks.5.attn.qkv.bias"] == (pytest.approx(1e-4), 0.05)
    assert groups["proposal_generator.head.cls_score.weight"] == (pytest.approx(1e-4), 0.05)
