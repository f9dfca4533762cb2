"""The package's layering: imports only point down, and the public namespace holds no internals.

Every import statement in ``backprop_gpu`` is read, function-level ones included, so a
cycle cannot hide behind a lazy import.
"""
import ast
from pathlib import Path

import backprop_gpu as bg

PKG = Path(bg.__file__).resolve().parent
#: package -> layer; a module may import from its own layer or below
LAYERS = {"array": 1, "tape": 2, "ops": 3, "nn": 4, "optim": 4, "amp": 4, "autograd": 4, "utils": 4, "cuda": 4,
          "distributed": 5, "app": 6}
#: the entries of LAYERS that are single modules (backprop_gpu/cuda.py), not packages
MODULE_LAYERS = {"cuda"}


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield path, parts


def _imports(path, parts):
    """Top-level packages of ``backprop_gpu`` that the module at ``path`` imports."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_pkg else parts[:-1]
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if not node.module else [target]
            elif node.module and node.module.startswith("backprop_gpu"):
                names = [node.module.split(".")[1:]]
            else:
                continue
            for t in names:
                if t:
                    yield t[0], node.lineno
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("backprop_gpu."):
                    yield a.name.split(".")[1], node.lineno


def test_every_package_has_a_layer():
    top = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert top == set(LAYERS) - MODULE_LAYERS, \
        f"packages without a layer, or layers without a package: {top ^ (set(LAYERS) - MODULE_LAYERS)}"
    modules = {p.stem for p in PKG.glob("*.py") if p.name != "__init__.py"}
    assert modules == MODULE_LAYERS, f"modules outside the layers: {modules ^ MODULE_LAYERS}"


def test_imports_point_down_only():
    bad = []
    for path, parts in _modules():
        if not parts:
            continue  # backprop_gpu/__init__.py sits above every layer
        mine = LAYERS[parts[0]]
        for target, line in _imports(path, parts):
            if target in LAYERS and target != parts[0] and LAYERS[target] > mine:
                bad.append(f"{path.relative_to(PKG.parent)}:{line} (layer {mine}) imports {target} (layer "
                           f"{LAYERS[target]})")
    assert not bad, "imports that point up a layer:\n" + "\n".join(bad)


def test_no_cycles_between_packages_of_one_layer():
    edges = {}
    for path, parts in _modules():
        if parts:
            for target, _ in _imports(path, parts):
                if target in LAYERS and target != parts[0] and LAYERS[target] == LAYERS[parts[0]]:
                    edges.setdefault(parts[0], set()).add(target)
    for a, targets in edges.items():
        for b in targets:
            assert a not in edges.get(b, ()), f"{a} and {b} import each other"


def test_the_checker_sees_an_upward_import(tmp_path):
    """The walker itself: a lazy import of ``ops`` inside a function of the tape is caught."""
    f = tmp_path / "engine.py"
    f.write_text("def f():\n    from ..ops import exp\n    return exp\n")
    assert ("ops", 2) in set(_imports(f, ["tape", "engine"]))


def test_public_namespace_is_pytorch_shaped_and_free_of_internals():
    for name in ("nn", "optim", "autograd", "utils", "cuda", "save", "load", "Tensor", "tensor", "exp", "matmul", "no_grad", "grad",
                 "manual_seed", "float32"):
        assert hasattr(bg, name), name
    assert hasattr(bg.utils.data, "DataLoader") and hasattr(bg.autograd, "grad") and hasattr(bg.nn, "Linear")
    for internal in ("annotations", "relu_backward", "relu_backward_colsum", "im2col", "col2im", "apply", "Op",
                     "max_pool2d_backward", "index_backward", "batch_norm_backward", "numbers", "np"):
        assert not hasattr(bg, internal), f"bg.{internal} is an internal"
    assert set(bg.__all__) <= set(dir(bg))
    for mod in (bg.ops, bg.nn, bg.optim, bg.autograd, bg.utils, bg.utils.data, bg.nn.utils, bg.cuda, bg.array,
                bg.tape):
        assert set(mod.__all__) <= set(dir(mod)), mod.__name__
