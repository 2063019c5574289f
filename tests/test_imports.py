"""The import structure: no cycles, engines independent, a light `--help`, nothing of the tests
in the installed package. `lint-imports` (run by scripts/test.sh) checks the layer contracts of
pyproject.toml; these tests check what contracts cannot say."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

import lenet5

PACKAGE = Path(lenet5.__file__).parent
HEAVY = ("torch", "onnx", "onnxruntime", "scipy", "matplotlib", "fastapi", "uvicorn")


def _module_names() -> dict[str, Path]:
    names = {}
    for file in PACKAGE.rglob("*.py"):
        parts = list(file.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = file
    return names


def import_graph() -> dict[str, set[str]]:
    """Every lenet5 module -> the lenet5 modules its import statements name, at module level
    and inside functions alike (``from . import x`` names the submodule x where there is one)."""
    modules = _module_names()

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                targets.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else known(base))
        graph[module] = {t for t in targets if t and t != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_sees_lazy_imports():
    graph = import_graph()
    assert "lenet5.numpy_engine.model" in graph["lenet5.engine"]  # inside make_engine
    assert "lenet5.onnx_engine" in graph["lenet5.model"]  # inside load


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_engines_never_import_each_other():
    graph = import_graph()
    for module, targets in graph.items():
        for one, other in (("numpy_engine", "torch_engine"), ("torch_engine", "numpy_engine")):
            if module.startswith(f"lenet5.{one}"):
                assert not any(t.startswith(f"lenet5.{other}") for t in targets), module


@pytest.mark.parametrize("command", ["", "train", "recipes", "sweep", "evaluate", "predict",
                                     "export", "report", "summary", "serve", "data fetch"])
def test_help_imports_nothing_heavy(command):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lenet5", *command.split(),
                           "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    imported = {line.rpartition("|")[2].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))


def test_the_test_data_generators_are_not_in_the_package():
    assert importlib.util.find_spec("lenet5.photo_digits") is None


def test_the_torch_engine_loads_a_model_without_the_numpy_engine(tmp_path):
    pytest.importorskip("torch")
    from lenet5 import checkpoint
    from lenet5.arch import LENET5, init_params

    path = tmp_path / "model.safetensors"
    checkpoint.save_model(path, init_params(LENET5, 0), {
        "arch": "lenet5", "classes": [str(d) for d in range(10)],
        "input_normalization": {"kind": "mean_std", "pad": 2, "mean": 0.13, "std": 0.31}})
    code = (f"import sys, numpy, lenet5; m = lenet5.load({str(path)!r}, engine='torch'); "
            "m.predict_proba(numpy.zeros((2, 28, 28), numpy.uint8)); "
            "print(sorted(k for k in sys.modules if k.startswith('lenet5.numpy_engine')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
