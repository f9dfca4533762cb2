"""``backprop-gpu selftest``: its checks pass on this machine's backends, find a broken one, and
its bench half (shrunk) produces a complete report."""
import json

import numpy as np
import pytest

from backprop_gpu.app import selftest
from backprop_gpu.array import available_backends
from backprop_gpu.optim import OPTIMIZERS


def test_checks_pass_on_every_backend_here():
    fast = [b for b in available_backends() if b != "numpy"]
    rows = selftest.run_checks(fast, progress=False, checks=[c for c in selftest.CHECKS if c != "training"])
    assert {r["backend"] for r in rows} == set(fast)
    assert {r["check"] for r in rows} == {"graph", "fused ops", "random streams", *(f"optim {n}" for n in OPTIMIZERS)}
    bad = [r for r in rows if not r["ok"]]
    assert not bad, bad


def test_training_check_on_the_compiled_cpu_backend():
    if "numba" not in available_backends():
        pytest.skip("numba backend unavailable")
    (row,) = selftest.run_checks(["numba"], progress=False, checks=["training"])
    assert row["ok"], row
    losses, acc = selftest._training(selftest.get_backend("numpy"))
    assert losses[-1] < losses[0] and acc[0] > 0.85  # it trains: the check compares something real


def test_a_backend_that_computes_wrongly_fails_its_check(monkeypatch):
    if "numba" not in available_backends():
        pytest.skip("numba backend unavailable")
    real = selftest._graph
    monkeypatch.setitem(selftest.CHECKS, "graph", (
        lambda b: real(b) if b.name == "numpy" else [a * (1 + 1e-6) for a in real(b)], 1e-10))
    (row,) = selftest.run_checks(["numba"], progress=False, checks=["graph"])
    assert not row["ok"] and 5e-7 < row["max_rel_err"] < 2e-6


def test_bench_half_writes_a_full_report(tmp_path):
    code = selftest.main(bench=True, out=tmp_path, backends=["numpy"], scale=0.001, repeats=2, progress=False,
                         log=lambda *a: None)
    assert code == 0
    data = json.loads((tmp_path / "selftest.json").read_text())
    kinds = [r["bench"] for r in data["bench"]]
    assert kinds.count("copy") == 1 and kinds.count("mlp") == 2
    assert kinds.count("optimizer") == 2 * 2 * len(OPTIMIZERS)  # 10M and 100M, as 1 and as 200 tensors
    for r in data["bench"]:
        assert r["seconds"] > 0 and np.isfinite(r["seconds"])
        if r["bench"] == "optimizer":
            assert r["launches_per_step"] == 1 and r["gb_per_s"] > 0  # one fused launch per buffer
    md = (tmp_path / "selftest.md").read_text()
    assert md.startswith("# backprop-gpu selftest on ") and "| optimizer | numpy | adam 100,000 as 200 |" in md


def test_cli_runs_it_and_names_a_backend_it_cannot_use(tmp_path, capsys):
    from backprop_gpu.app.cli import main

    assert main(["selftest", "--backends", "numpy", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "| optim adam |" not in (tmp_path / "selftest.md").read_text()  # numpy is the reference itself
    assert main(["selftest", "--backends", "nope", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "unknown backend 'nope'; the backends are numpy, numba" in capsys.readouterr().err
