"""Build the HTML API reference with pdoc: ``python docs/build.py [OUT_DIR]`` (default ``docs/_build``).

The reference covers the public modules (:data:`PUBLIC_MODULES`: the package,
``distributed`` and the app's datasets, and every submodule their ``__all__``
reaches), each rendered from its docstrings, and the two guides,
``tutorial.md`` and ``differences.md``, rendered as pages beside them. pdoc reports problems as
Python warnings; ``--strict`` (what ``tests/test_docs.py`` checks) turns any
warning into a failure.
"""
from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
import types
import warnings

DOCS = pathlib.Path(__file__).resolve().parent

#: Where the public API starts: the package, and the modules it loads on first use that its ``__all__``
#: leaves out (``bg.distributed``; the datasets the tutorial trains on).
ROOTS = ["backprop_gpu", "backprop_gpu.distributed", "backprop_gpu.app.data"]
#: The modules of the public API, in the order the reference lists them. The internal layers (``array``,
#: ``tape``, ``ops``) and the rest of the app are left out; ``tests/test_docs.py`` checks that this list
#: is exactly what the ``__all__`` of :data:`ROOTS` reaches.
PUBLIC_MODULES = [
    "backprop_gpu", "backprop_gpu.nn", "backprop_gpu.nn.functional", "backprop_gpu.nn.init", "backprop_gpu.nn.utils",
    "backprop_gpu.optim", "backprop_gpu.optim.lr_scheduler", "backprop_gpu.amp", "backprop_gpu.autograd",
    "backprop_gpu.utils", "backprop_gpu.utils.data", "backprop_gpu.utils.serialization", "backprop_gpu.utils.dlpack",
    "backprop_gpu.utils.hooks", "backprop_gpu.cuda", "backprop_gpu.distributed", "backprop_gpu.ops.return_types",
    "backprop_gpu.app.data",
]

#: The guides: page name -> Markdown file in docs/.
PAGES = {"tutorial": "tutorial.md", "differences": "differences.md"}


def _page(name: str, filename: str):
    """A module-shaped page for pdoc: its docstring is the Markdown file."""
    import pdoc.doc

    page = types.ModuleType(name)
    page.__doc__ = (DOCS / filename).read_text()  # no __file__: pdoc would parse the Markdown as Python
    return pdoc.doc.Module(page)


def build(out_dir: pathlib.Path) -> dict:
    """Render every public module and the guides into ``out_dir``; return their ``pdoc.doc.Module`` objects
    by name (the guides' too)."""
    import pdoc.doc
    import pdoc.render

    pdoc.render.configure(docformat="restructuredtext", show_source=False, search=True,
                          footer_text="backprop_gpu API reference")
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", ()):
            getattr(module, attr)  # resolve names loaded on first use (PEP 562): pdoc looks in __dict__
    modules = {name: pdoc.doc.Module.from_name(name) for name in PUBLIC_MODULES}
    modules.update({name: _page(name, filename) for name, filename in PAGES.items()})
    out_dir.mkdir(parents=True, exist_ok=True)
    for module in modules.values():
        path = out_dir / f"{module.fullname.replace('.', '/')}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pdoc.render.html_module(module, modules), encoding="utf-8")
    (out_dir / "index.html").write_text(pdoc.render.html_index(modules), encoding="utf-8")
    (out_dir / "search.js").write_text(pdoc.render.search_index(modules), encoding="utf-8")
    return modules


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=pathlib.Path, default=DOCS / "_build")
    parser.add_argument("--strict", action="store_true", help="fail on any warning pdoc emits")
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        modules = build(args.out_dir)
    for w in caught:
        print(f"warning: {w.filename}:{w.lineno}: {w.message}", file=sys.stderr)
    print(f"wrote {len(modules)} pages to {args.out_dir}/index.html ({len(caught)} warnings)")
    return 1 if args.strict and caught else 0


if __name__ == "__main__":
    sys.exit(main())
