"""PyTorch scripts run after changing only their imports (see tests/port/README.md)."""
import contextlib
import io
import json
import math
import re
import sys
from pathlib import Path

import pytest

PORT = Path(__file__).parent / "port"
SCRIPTS = sorted(p for p in PORT.glob("*.py") if not p.name.startswith("_"))
#: ``torch`` as the first name of a module in an import line (``import torch.nn as nn``, ``from torch import nn``)
_IMPORT = re.compile(r"^(\s*(?:import|from)\s+)torch\b", re.M)


def ported(source: str) -> str:
    """``source`` with ``torch`` swapped for ``backprop_gpu`` in its import lines, and nowhere else."""
    swapped = _IMPORT.sub(r"\1backprop_gpu", source)
    return re.sub(r"^(\s*)import backprop_gpu$", r"\1import backprop_gpu as torch", swapped, flags=re.M)


def run(path: Path, source: str) -> dict:
    out = io.StringIO()
    sys.path.insert(0, str(PORT))
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(source, str(path), "exec"), {"__name__": "__main__", "__file__": str(path)})
    finally:
        sys.path.remove(str(PORT))
    lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1, out.getvalue()
    return json.loads(lines[0][len("RESULT "):])


def close(a, b, where="result"):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=2e-3, abs_tol=2e-4), f"{where}: {a} vs torch {b}"
    else:
        assert a == b, f"{where}: {a!r} vs torch {b!r}"


def test_the_import_swap_touches_import_lines_only():
    src = "import torch\nimport torch.nn as nn\nfrom torch.utils.data import DataLoader\nx = torch.ones(2)\n"
    assert ported(src) == ("import backprop_gpu as torch\nimport backprop_gpu.nn as nn\n"
                           "from backprop_gpu.utils.data import DataLoader\nx = torch.ones(2)\n")


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_script_runs_ported_and_agrees_with_torch(path):
    source = path.read_text()
    ours = run(path, ported(source))
    try:
        import torch  # noqa: F401
    except ImportError:
        return  # the script's own checks passed on backprop_gpu; torch is not here to compare with
    close(ours, run(path, source))
