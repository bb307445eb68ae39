"""The package's layers, read from its imports: no cycles, and each layer imports only from below.

Each check runs in a fresh interpreter, so a module counts as imported only if importing the
module under test loaded it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vaelab

pytestmark = pytest.mark.contract

PACKAGE_DIR = Path(vaelab.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports_of(tree: ast.AST, modules: set[str]) -> set[str]:
    """The vaelab modules a module's code imports anywhere in it, function-local imports included
    (they run as surely as top-level ones, only later); imports under ``if TYPE_CHECKING:`` never
    run and do not count. ``from vaelab import X`` of a lazy public name imports the module that
    ``vaelab._PUBLIC`` maps it to."""
    targets = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaelab"):
            for alias in node.names:  # `from vaelab.x import y` imports vaelab.x.y where y is a module
                submodule = f"{node.module}.{alias.name}"
                if submodule in modules:
                    targets.add(submodule)
                elif node.module == "vaelab" and alias.name in vaelab._PUBLIC:  # the lazy root loads the name's module
                    targets.add(vaelab._PUBLIC[alias.name])
                else:
                    targets.add(node.module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names if alias.name.startswith("vaelab"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return targets & modules


def _import_graph() -> dict[str, set[str]]:
    """module -> the vaelab modules it imports (see :func:`_imports_of`)."""
    modules = {_module_name(path): path for path in PACKAGE_DIR.rglob("*.py")}
    return {name: _imports_of(ast.parse(path.read_text()), set(modules)) for name, path in modules.items()}


# The layers of ../shared/STYLE.md, bottom first: a module imports only from its own layer or below.
# A study's command module (studies/<study>/command.py) belongs to the command line.
LAYERS = (
    ("vaelab.errors", "vaelab.machine", "vaelab.runio", "vaelab.distributed", "vaelab.threads", "vaelab.progress", "vaelab.jobs", "vaelab.draws"),
    ("vaelab.config", "vaelab.schedules", "vaelab.likelihoods", "vaelab.posteriors"),
    ("vaelab.data",),
    ("vaelab.models",),
    ("vaelab.objectives",),
    ("vaelab.estimators", "vaelab.exact"),
    ("vaelab.builders", "vaelab.preflight", "vaelab.evaluation", "vaelab.training", "vaelab.batched", "vaelab.seeds", "vaelab.tracking"),
    ("vaelab.studies",),
    ("vaelab.cli", "vaelab.__main__"),
)


def _layer(module: str) -> int:
    if module.startswith("vaelab.studies.") and module.endswith(".command"):
        return len(LAYERS) - 1
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def test_a_public_name_of_the_lazy_root_counts_as_an_import_of_its_module():
    modules = set(_import_graph())
    assert _imports_of(ast.parse("from vaelab import train, ConfigError, progress"), modules) == {"vaelab.training", "vaelab.errors", "vaelab.progress"}


def test_no_module_imports_another_modules_private_name():
    """What modules share is public: ``from vaelab.x import _y`` reaches into vaelab.x's internals."""
    private = [
        f"{_module_name(path)} imports {node.module}.{alias.name}"
        for path in PACKAGE_DIR.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vaelab")
        for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")
    ]
    assert not private, "\n".join(private)


def test_each_module_imports_only_from_its_layer_or_below():
    upward = [
        f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        for module, targets in _import_graph().items() if module != "vaelab"
        for target in sorted(targets) if target != "vaelab" and _layer(target) > _layer(module)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle_in_the_package():
    graph = _import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def _loaded_after(statement: str) -> set[str]:
    probe = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return set(result.stdout.split())


@pytest.mark.parametrize(
    "statement,forbidden",
    [
        ("import vaelab.config", {"torch", "vaelab.objectives", "vaelab.data", "vaelab.training"}),
        ("import vaelab.models", {"vaelab.config", "vaelab.training"}),
        ("import vaelab.evaluation.evaluate", {"vaelab.training"}),
        ("import vaelab.studies.compare.report", {"vaelab.training", "vaelab.estimators.bounds"}),
        ("import vaelab.studies.reproduce.report", {"vaelab.training"}),
        ("import vaelab.studies.bounds.page", {"vaelab.training"}),
        ("import vaelab", {"torch"}),
        ("from vaelab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass", {"torch"}),
        ("from vaelab.cli import main\ntry:\n    main(['--version'])\nexcept SystemExit:\n    pass", {"torch"}),
    ],
)
@pytest.mark.slow
def test_a_layer_does_not_load_what_is_above_it(statement, forbidden):
    assert not _loaded_after(statement) & forbidden


@pytest.mark.slow
def test_public_names_of_the_root_load_on_first_use():
    loaded = _loaded_after("import vaelab\nassert callable(vaelab.train) and vaelab.ExperimentConfig().seed == 0")
    assert "vaelab.training" in loaded and "torch" in loaded
