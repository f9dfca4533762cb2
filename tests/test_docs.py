"""The documentation: the API reference (docs/build.py, pdoc) builds without a warning and gives every
public name a docstring, and the guides' code (docs/tutorial.md, docs/differences.md) runs and prints
what the pages show."""
import contextlib
import doctest
import gzip
import importlib
import importlib.util
import inspect
import io
import pathlib
import re
import types
import warnings

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_spec = importlib.util.spec_from_file_location("docs_build", DOCS / "build.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


# -- the reference -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """(pdoc modules by name, warnings caught, output directory) of one build."""
    pytest.importorskip("pdoc", reason="the [test] extra installs pdoc, which builds the API reference")
    out = tmp_path_factory.mktemp("reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = build.build(out)
    return modules, caught, out


def _reachable(roots):
    """The backprop_gpu modules ``roots`` reach through ``__all__``, roots included."""
    seen, todo = [], list(roots)
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            value = getattr(module, attr)
            if isinstance(value, types.ModuleType) and value.__name__.startswith("backprop_gpu"):
                todo.append(value.__name__)
    return seen


def test_the_reference_lists_exactly_the_public_modules():
    assert sorted(build.PUBLIC_MODULES) == sorted(_reachable(build.ROOTS))
    import backprop_gpu as bg

    lazily_loaded = {f"backprop_gpu{spec}" for spec in bg._LAZY_MODULES.values()}
    assert {"backprop_gpu.distributed", "backprop_gpu.app"} <= lazily_loaded  # ROOTS' extras are bg's


def _undocumented(modules):
    """(names checked, names without a docstring). Checked: each public module; each name in its
    ``__all__``; each public method and property of those classes. A constant can have no docstring of
    its own: an assigned one is documented by a string after the assignment, an imported one by its
    module's docstring naming it in double backticks. Plain data attributes are described by their
    class's docstring and not checked one by one."""
    import pdoc.doc

    checked, missing = 0, []
    for name in build.PUBLIC_MODULES:
        module = modules[name]
        checked += 1
        if not module.docstring.strip():
            missing.append(f"{name} (module)")
        for member in module.members.values():
            if member.name.startswith("_") or isinstance(member, pdoc.doc.Module):  # members: __all__'s
                continue
            checked += 1
            documented = member.docstring.strip() or (
                isinstance(member, pdoc.doc.Variable) and f"``{member.name}``" in module.docstring)
            if not documented:
                missing.append(member.fullname)
            if isinstance(member, pdoc.doc.Class):
                for sub in member.own_members:
                    if sub.name.startswith("_"):
                        continue
                    static = inspect.getattr_static(member.obj, sub.name, None)
                    if isinstance(sub, pdoc.doc.Variable) and not isinstance(static, property):
                        continue
                    checked += 1
                    if not sub.docstring.strip():
                        missing.append(sub.fullname)
    return checked, missing


def test_every_public_name_has_a_docstring(reference):
    modules, _, _ = reference
    checked, missing = _undocumented(modules)
    assert checked > 750  # modules, their names, and the classes' methods and properties
    assert not missing, f"{len(missing)} public names without a docstring: " + ", ".join(missing)


def test_the_reference_builds_without_a_warning(reference):
    _, caught, _ = reference
    assert not caught, "pdoc warned:\n" + "\n".join(f"{w.category.__name__}: {w.message}" for w in caught)


def test_every_public_name_is_in_the_reference(reference):
    modules, _, out = reference
    absent = []
    for name in build.PUBLIC_MODULES:
        page = (out / f"{name.replace('.', '/')}.html").read_text()
        module = modules[name].obj
        for attr in getattr(module, "__all__", ()):
            if not isinstance(getattr(module, attr), types.ModuleType) and f'id="{attr}"' not in page:
                absent.append(f"{name}.{attr}")
    assert not absent, f"missing from the reference: {absent}"
    index = (out / "index.html").read_text()
    assert all(f'href="{page}.html"' in index for page in build.PAGES)


def test_the_guides_are_pages_of_the_reference(reference):
    _, _, out = reference
    differences, tutorial = (out / "differences.html").read_text(), (out / "tutorial.html").read_text()
    assert '<h1 id="differences-from-pytorch">Differences from PyTorch' in differences
    assert differences.count("<h2") >= 10
    assert '<h1 id="tutorial">Tutorial' in tutorial and "784-16-16-10" in tutorial


# -- the guides' code --------------------------------------------------------------------------------
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
_CHECKER = doctest.OutputChecker()


def _blocks(page: str):
    """(section heading, python code, line, the output shown after it or None) for each python block."""
    text = (DOCS / page).read_text()
    fences = [(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 2, m.start()) for m in _FENCE.finditer(text)]
    blocks = []
    for i, (lang, body, line, start) in enumerate(fences):
        if lang != "python":
            continue
        headings = re.findall(r"^## (.*)$", text[:start], re.M)
        shown = fences[i + 1][1] if i + 1 < len(fences) and fences[i + 1][0] == "text" else None
        blocks.append((headings[-1] if headings else "", body, line, shown))
    return blocks


def _run(page, blocks):
    """Run ``blocks`` in order in one fresh namespace; return each one's printed output."""
    namespace, printed = {"__name__": f"docs.{page}"}, []
    for _, code, line, _ in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, f"{DOCS / page}:{line}", "exec"), namespace)  # noqa: S102 - the page's own code
        printed.append(out.getvalue())
    return printed


@pytest.mark.parametrize("page", ["tutorial.md", "differences.md"])
def test_the_guides_code_prints_what_the_page_shows(page, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_DIR", str(tmp_path / "no-mnist"))  # the tutorial's digits branch, as shown
    blocks = _blocks(page)
    assert sum(shown is not None for *_, shown in blocks) >= 10
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for (section, _, line, shown), got in zip(blocks, _run(page, blocks)):
        if shown is not None:
            assert _CHECKER.check_output(shown, got, flags), (
                f"{page}:{line} ({section}) printed\n{got}\nbut the page shows\n{shown}")


def _write_idx(path, array):
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, array.ndim]) + dims + array.astype(np.uint8).tobytes())


def test_the_tutorial_trains_the_784_16_16_10_network_on_mnist_idx_files(monkeypatch, tmp_path):
    """MNIST is not bundled: stand-in IDX files in its layout, as the tutorial's MNIST_DIR, take the
    784-input branch, and it prints what the text says it prints there."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 96), ("t10k", 32)):
        _write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    monkeypatch.setenv("MNIST_DIR", str(tmp_path))
    blocks = [b for b in _blocks("tutorial.md") if b[0] == "" or b[0].startswith("5.")]
    printed = _run("tutorial.md", blocks)
    said = re.search(r"On MNIST it prints `([^`]*)`", (DOCS / "tutorial.md").read_text()).group(1)
    assert printed[1].strip() == said == "784-16-16-10 network, 13002 parameters"
    assert printed[2].startswith("test accuracy above 85%:")  # the stand-in images are noise: no claim
