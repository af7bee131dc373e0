"""
The package's import graph: no module imports a higher layer, the detector does not depend on the
research tooling, and no two sub-packages import each other.
"""

import ast
import os

from conftest import REPO_ROOT

PACKAGE_ROOT = os.path.join(REPO_ROOT, "projects", "DSLA")

# Sub-packages and modules of `dsla` by layer: each may import its own layer and those below.
LAYERS = [
    {"utils", "config", "layers", "label_assignment", "losses"},
    {
        "modeling",
        "data",
        "evaluation",
        "solver",
        "checkpoint",
        "export",
        "visualization",
        "tiled_inference",
    },
    {"engine", "model_zoo"},
    # Research tooling: the detector a user imports does not depend on it.
    {"analysis", "benchmark", "study"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
RESEARCH = LAYERS[-1]


def _module_name(path):
    name = os.path.relpath(path, PACKAGE_ROOT)[: -len(".py")].replace(os.sep, ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


def _imports(path, module):
    """The `dsla` modules that the file at ``path`` (module ``module``) imports."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
                if not node.module:  # from . import data
                    names = [f"{names[0]}.{a.name}" for a in node.names]
            else:
                names = [node.module or ""]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n == "dsla" or n.startswith("dsla."))
    return found


def _graph():
    graph = {}
    for directory, _, files in os.walk(os.path.join(PACKAGE_ROOT, "dsla")):
        for file_name in files:
            if file_name.endswith(".py"):
                path = os.path.join(directory, file_name)
                module = _module_name(path)
                graph[module] = _imports(path, module)
    return graph


def _part(module):
    """The sub-package or top-level module of ``dsla`` that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(m) for m in _graph()} - {None}
    assert parts - set(LAYER) == set(), "give each new part of dsla a layer in LAYERS"


def test_no_module_imports_a_higher_layer():
    violations = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        for target in targets
        if _part(module) is not None
        and _part(target) is not None
        and LAYER[_part(target)] > LAYER[_part(module)]
    ]
    assert violations == []


def test_the_detector_does_not_import_the_research_tooling():
    # `import dsla` (the package itself) registers the detector: it must not pull in the research
    # tooling (study, analysis, benchmark).
    violations = [
        f"{module} imports {target}"
        for module, targets in _graph().items()
        if _part(module) not in RESEARCH
        for target in targets
        if _part(target) in RESEARCH
    ]
    assert violations == []


def test_sub_packages_do_not_import_each_other_in_a_cycle():
    graph = {}
    for module, targets in _graph().items():
        for target in targets:
            if None not in (_part(module), _part(target)) and _part(module) != _part(target):
                graph.setdefault(_part(module), set()).add(_part(target))

    def reaches(start, goal, seen=()):
        return any(
            t == goal or (t not in seen and reaches(t, goal, (*seen, t)))
            for t in graph.get(start, ())
        )

    cycles = sorted(part for part in graph if reaches(part, part))
    assert cycles == []


def test_the_walk_sees_the_imports_it_checks():
    # A parser that missed relative imports would make the tests above pass vacuously.
    graph = _graph()
    assert "dsla.utils.file_io" in graph["dsla.checkpoint.atomic"]
    assert "dsla.data" in graph["dsla"]
    assert "dsla.engine" in graph["dsla.study.runs"]
    assert "dsla.engine" in graph["dsla.benchmark.speed"]
