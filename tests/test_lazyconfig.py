"""configs/DSLA/*.py: each LazyConfig instantiates the network, solver and schedule of the YAML of
its name."""

import os

import pytest
import torch

from detectron2.config import LazyConfig, instantiate
from detectron2.modeling import build_model
from detectron2.solver import build_lr_scheduler
from detectron2.utils.events import EventStorage

from dsla.model_zoo import get_config, get_config_file
from dsla.solver import build_optimizer

from conftest import load_config

MODELS = [
    "DSLA/dsla_quickstart_shapes",
    "DSLA/dsla_R_50_FPN_1x",
    "DSLA/dsla_R_101_DCN_FPN_ms_2x",
    "DSLA/dsla_X_101_64x4d_DCN_FPN_ms_2x",
    "DSLA/dsla_Swin_S_FPN_ms_3x",
    "DSLA/dsla_mobilenet_v2_trees",
    "FCOS-Baseline/fcos_quickstart_shapes",
    "FCOS-Baseline/fcos_mobilenet_v2_trees",
]


def _hyperparams(optimizer, model):
    """Parameter name -> (lr, weight_decay)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {
        names[id(p)]: (g["lr"], g["weight_decay"])
        for g in optimizer.param_groups
        for p in g["params"]
    }


def _options(module):
    """The plain attributes of a module (its constructor's options), without submodules and
    parameters."""
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and k != "training"}


def _lazy(name, *overrides):
    return LazyConfig.apply_overrides(
        LazyConfig.load(get_config_file(f"{name}.py")), list(overrides)
    )


@pytest.mark.parametrize("name", MODELS)
def test_lazyconfig_builds_the_network_and_solver_of_its_yaml(name):
    cfg = load_config(f"configs/{name}.yaml")
    lazy = _lazy(name)
    torch.manual_seed(0)
    yaml_model = build_model(cfg)
    lazy_model = instantiate(lazy.model)
    assert {n: p.shape for n, p in lazy_model.state_dict().items()} == {
        n: p.shape for n, p in yaml_model.state_dict().items()
    }
    assert [n for n, p in lazy_model.named_parameters() if p.requires_grad] == [
        n for n, p in yaml_model.named_parameters() if p.requires_grad
    ]
    # Same options (loss weights, label assignment, inference) in the head and proposal generator,
    # or in detectron2's FCOS itself.
    if hasattr(yaml_model, "proposal_generator"):
        pairs = [
            (lazy_model.proposal_generator, yaml_model.proposal_generator),
            (lazy_model.proposal_generator.head, yaml_model.proposal_generator.head),
        ]
    else:
        pairs = [(lazy_model, yaml_model)]
    for module, yaml_module in pairs:
        options, yaml_options = _options(module), _options(yaml_module)
        assert options.keys() == yaml_options.keys() and len(options) >= 3
        for key, value in options.items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, yaml_options[key])
            elif type(value).__module__.startswith("detectron2"):  # e.g. FCOS's box transform
                assert type(value) is type(yaml_options[key]) and vars(value) == vars(
                    yaml_options[key]
                ), key
            else:
                assert value == yaml_options[key], key
    torch.testing.assert_close(lazy_model.pixel_mean, yaml_model.pixel_mean)
    torch.testing.assert_close(lazy_model.pixel_std, yaml_model.pixel_std)

    yaml_optimizer = build_optimizer(cfg, yaml_model)
    lazy.optimizer.params.model = lazy_model
    lazy_optimizer = instantiate(lazy.optimizer)
    assert type(lazy_optimizer) is type(yaml_optimizer)
    assert _hyperparams(lazy_optimizer, lazy_model) == _hyperparams(yaml_optimizer, yaml_model)
    for key in ("momentum", "betas", "nesterov", "eps"):
        assert lazy_optimizer.defaults.get(key) == yaml_optimizer.defaults.get(key), key
    # Whole-model clipping is a step pre-hook: present in both or in neither.
    assert len(lazy_optimizer._optimizer_step_pre_hooks) == len(
        yaml_optimizer._optimizer_step_pre_hooks
    )
    assert bool(lazy_optimizer._optimizer_step_pre_hooks) == cfg.SOLVER.CLIP_GRADIENTS.ENABLED

    # Same learning rate at every iteration that matters: warm-up, steps, end.
    max_iter = cfg.SOLVER.MAX_ITER
    assert lazy.train.max_iter == max_iter
    scheduler = build_lr_scheduler(cfg, yaml_optimizer)
    multiplier = instantiate(lazy.lr_multiplier)
    iters = [0, cfg.SOLVER.WARMUP_ITERS // 2, cfg.SOLVER.WARMUP_ITERS, max_iter - 1]
    iters += [s + d for s in cfg.SOLVER.STEPS for d in (-1, 0)]
    for it in iters:
        assert multiplier(it / max_iter) == pytest.approx(scheduler._multiplier(it / max_iter)), it

    assert lazy.dataloader.train.total_batch_size == cfg.SOLVER.IMS_PER_BATCH
    released = get_config(f"{name}.yaml")
    assert (
        lazy.train.init_checkpoint == released.MODEL.WEIGHTS
        and lazy.train.output_dir == cfg.OUTPUT_DIR
    )
    assert lazy.train.checkpointer.period == cfg.SOLVER.CHECKPOINT_PERIOD
    assert (
        lazy.train.eval_period == cfg.TEST.EVAL_PERIOD
        and lazy.train.amp.enabled == cfg.SOLVER.AMP.ENABLED
    )


def test_lazyconfig_follows_its_yaml_when_the_yaml_changes(tmp_path, monkeypatch):
    # The LazyConfig holds no numbers of its own: it reads them from the YAML of its name.
    import dsla.model_zoo

    yaml_text = open(get_config_file("DSLA/dsla_quickstart_shapes.yaml")).read()
    (tmp_path / "DSLA").mkdir()
    (tmp_path / "DSLA" / "Base-DSLA.yaml").write_text(
        open(get_config_file("DSLA/Base-DSLA.yaml")).read()
    )
    (tmp_path / "DSLA" / "dsla_quickstart_shapes.yaml").write_text(
        yaml_text.replace("NUM_CLASSES: 4", "NUM_CLASSES: 7").replace(
            "MAX_ITER: 1500", "MAX_ITER: 1234"
        )
    )
    monkeypatch.setattr(dsla.model_zoo, "CONFIG_ROOT", str(tmp_path))
    lazy = LazyConfig.load(
        os.path.join(dsla.model_zoo.__path__[0], "configs", "DSLA", "dsla_quickstart_shapes.py")
    )
    assert (
        lazy.model.proposal_generator.num_classes == 7
        and lazy.model.proposal_generator.head.num_classes == 7
    )
    assert lazy.train.max_iter == 1234


def test_quickstart_lazyconfig_trains_a_step_and_evaluates_on_the_shapes_data(
    shapes_root, tmp_path
):
    lazy = _lazy(
        "DSLA/dsla_quickstart_shapes",
        f"train.output_dir={tmp_path}",
        "train.device=cpu",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.num_workers=0",
        "dataloader.test.num_workers=0",
    )
    model = instantiate(lazy.model)
    lazy.optimizer.params.model = model
    optimizer = instantiate(lazy.optimizer)
    batch = next(iter(instantiate(lazy.dataloader.train)))
    assert len(batch) == 2 and batch[0]["image"].shape[-2:] == (160, 160)
    with EventStorage():
        losses = model(batch)
    assert set(losses) == {"loss_dsla_cls", "loss_dsla_box"}
    sum(losses.values()).backward()
    optimizer.step()

    model.eval()
    evaluator = instantiate(lazy.dataloader.evaluator)
    evaluator.reset()
    with torch.no_grad():
        for inputs in instantiate(lazy.dataloader.test):
            evaluator.process(inputs, model(inputs))
    results = evaluator.evaluate()
    assert "AP" in results["bbox"]
    assert (tmp_path / "inference" / "shapes_val").is_dir()


def test_get_config_gives_a_lazyconfig_for_py_and_a_cfgnode_for_yaml():
    lazy = get_config("DSLA/dsla_quickstart_shapes.py")
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(lazy)
    cfg = get_config("DSLA/dsla_quickstart_shapes.yaml")
    assert cfg.MODEL.DSLA.NUM_CLASSES == 4
    with pytest.raises(RuntimeError, match="not a DSLA config"):
        get_config_file("DSLA/no_such_config.yaml")
