"""dsla.model_zoo finds the shipped configs from any directory, also in a non-editable install."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from dsla.model_zoo import get_config, get_config_file

from conftest import REPO_ROOT


def test_repository_configs_are_the_package_configs():
    # One config tree: configs/ at the repository root is the package's, not a copy that could
    # drift.
    package_configs = os.path.dirname(
        os.path.dirname(get_config_file("DSLA/dsla_R_50_FPN_1x.yaml"))
    )
    assert os.path.samefile(os.path.join(REPO_ROOT, "configs"), package_configs)


def test_get_config_works_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = get_config("DSLA/dsla_R_101_DCN_FPN_ms_2x.yaml")
    assert cfg.MODEL.RESNETS.DEPTH == 101 and cfg.SOLVER.BASE_LR == 0.02
    assert os.path.isabs(get_config_file("FCOS-Baseline/fcos_R_50_FPN_1x.yaml"))


def test_non_editable_install_ships_the_configs(tmp_path):
    # Build from a copy of the sources: setuptools builds in the source tree and would leave build/
    # in the repo.
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    shutil.copytree(os.path.join(REPO_ROOT, "projects"), source / "projects", ignore=ignore)
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(REPO_ROOT, name), source / name)
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), str(source)], check=True, capture_output=True)
    script = textwrap.dedent(
        f"""
        import os
        import dsla
        from dsla.model_zoo import get_config, get_config_file

        assert dsla.__file__.startswith({str(target)!r}), dsla.__file__
        path = get_config_file("DSLA/dsla_R_50_FPN_1x.yaml")
        assert path.startswith({str(target)!r}) and os.path.isfile(path), path
        cfg = get_config("DSLA/dsla_R_50_FPN_1x.yaml")
        assert cfg.MODEL.DSLA.CLS_LOSS_WEIGHT == 2.0 and cfg.SOLVER.MAX_ITER == 87960
        lazy = get_config("DSLA/dsla_quickstart_shapes.py")
        assert lazy.model.proposal_generator.num_classes == 4 and lazy.train.max_iter == 1500
        print("configs found")
        """
    )
    # The caller's PYTHONPATH stays behind the target: where detectron2 comes from one (the GPU
    # check's wheels), the installed dsla still needs it.
    pythonpath = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "configs found" in out.stdout


def test_unknown_config_names_the_config_root():
    with pytest.raises(RuntimeError, match="model_zoo"):
        get_config("DSLA/dsla_R_50_FPN_9x.yaml")
