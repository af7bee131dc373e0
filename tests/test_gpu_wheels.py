"""tools/gpu_wheels.py: the wheel set for the GPU machine is checked for duplicates, unmet
requirements and size."""

import subprocess
import zipfile

from tools import gpu_wheels


def _wheel(folder, name, version, requires=()):
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    metadata = [f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", "\n".join(metadata))
    return str(path)


def test_requirements_follow_the_device_python_and_the_extras_asked_for(tmp_path):
    path = _wheel(
        tmp_path,
        "pkg",
        "1.0",
        [
            "numpy",
            'dataclasses; python_version < "3.7"',
            'tomli; python_version < "3.11"',
            'pytest; extra == "test"',
            'shapely; extra == "all"',
        ],
    )
    assert [r.name for r in gpu_wheels.wheel_requirements(path)] == ["numpy"]
    assert [r.name for r in gpu_wheels.wheel_requirements(path, ("test",))] == ["numpy", "pytest"]


def test_a_complete_set_has_no_problems(tmp_path):
    wheels = [
        _wheel(tmp_path, "fvcore", "0.1.5", ["numpy", "iopath>=0.1.7"]),
        _wheel(tmp_path, "iopath", "0.1.10", ["portalocker"]),
        _wheel(tmp_path, "dsla-detectron2", "0.1.0", ["fvcore", 'ruff==0.17.6; extra == "test"']),
    ]
    provided = {"numpy", "portalocker"}
    assert gpu_wheels.check_wheels(wheels, provided, {"dsla-detectron2": ("test",)}) == []


def test_unmet_requirements_and_second_versions_are_problems(tmp_path):
    wheels = [
        _wheel(tmp_path, "fvcore", "0.1.5", ["yacs>=0.1.6"]),
        _wheel(tmp_path, "iopath", "0.1.9"),
        _wheel(tmp_path, "iopath", "0.1.10"),
        _wheel(tmp_path, "dsla-detectron2", "0.1.0", ['hypothesis>=6; extra == "test"']),
    ]
    problems = gpu_wheels.check_wheels(wheels, set(), {"dsla-detectron2": ("test",)})
    assert len(problems) == 3
    assert problems[0].startswith("2 versions of iopath")
    assert any("requires hypothesis>=6" in p for p in problems)
    assert any("fvcore-0.1.5-py3-none-any.whl requires yacs>=0.1.6" in p for p in problems)


def test_travel_size_counts_the_tree_git_sends_and_the_wheels(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/ignored\n")
    (repo / "tracked").write_bytes(b"x" * 2**20)
    (repo / "ignored").write_bytes(b"x" * 2**21)
    subprocess.run(["git", "-C", str(repo), "add", "tracked"], check=True)
    (repo / "untracked").write_bytes(b"x" * 2**19)
    wheel = tmp_path / "a.whl"
    wheel.write_bytes(b"x" * 2**20)
    tree_mb, wheels_mb = gpu_wheels.travel_size_mb(str(repo), [str(wheel)])
    assert tree_mb == 1.5 + len("/ignored\n") / 2**20
    assert wheels_mb == 1.0
