"""Every loader validates first, then applies: a damaged or foreign state raises an error naming the
entry, and the model, optimizer, scheduler, data loader and RNGs are left exactly as they were."""
import copy
import re

import numpy as np
import pytest

import backprop_gpu as bg
from helpers import trained
from backprop_gpu import nn, optim
from backprop_gpu.app import checkpoint, models
from backprop_gpu.app.checkpoint import CheckpointError
from backprop_gpu.app.cli import main
from backprop_gpu.app.train import TrainConfig, Trainer
from backprop_gpu.optim import lr_scheduler


def plain(v):
    """``v`` with every tensor replaced by a NumPy copy of its values (a snapshot, not a reference)."""
    if isinstance(v, bg.Tensor):
        return v.numpy().copy()
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(plain(x) for x in v)
    return copy.deepcopy(v)


def assert_same(a, b, where="state"):
    if isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
        assert a.dtype == b.dtype, where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def snapshot(model=None, opt=None, sched=None, generators=()):
    return {"model": plain(model.state_dict()) if model is not None else None,
            "opt": plain(opt.state_dict()) if opt is not None else None,
            "sched": plain(sched.state_dict()) if sched is not None else None,
            "rng": [copy.deepcopy(g.bit_generator.state) for g in generators]}


def edited_checkpoint(tmp_path, edit, name="bad.safetensors"):
    """A checkpoint of ``trained()`` (Adam + StepLR, 3 steps) with ``edit(tensors, meta)`` applied."""
    m, opt, sched = trained()
    tensors, meta = checkpoint.pack(m, opt, sched, extra={"epoch": 3})
    tensors = {k: np.array(v) for k, v in tensors.items()}
    edit(tensors, meta)
    path = tmp_path / name
    checkpoint.save(path, tensors, meta)
    return path


def _set(path, value):
    def edit(tensors, meta):
        *head, last = path
        d = meta
        for k in head:
            d = d[k]
        d[last] = value
    return edit


def _tensor(key, make):
    def edit(tensors, meta):
        tensors[key] = make(tensors.get(key))
    return edit


def _drop(key):
    def edit(tensors, meta):
        del tensors[key]
    return edit


# (edit, entry named, what the message says about it)
RESTORE_CASES = {
    "int32 weights": (_tensor("model.0.weight", lambda w: (w * 100).astype(np.int32)), "model.0.weight",
                      "dtype int32, the model's is float32"),
    "float64 weights": (_tensor("model.0.weight", lambda w: w.astype(np.float64)), "model.0.weight",
                        "dtype float64, the model's is float32"),
    # a lossless upcast is refused too: a run's own checkpoint has its model's dtypes
    "float16 weights": (_tensor("model.2.bias", lambda w: w.astype(np.float16)), "model.2.bias",
                        "dtype float16, the model's is float32"),
    "lr -1": (_set(("optimizer", "param_groups", 0, "lr"), -1.0), "optimizer.param_groups[0].lr",
              "-1.0 is not a valid learning rate"),
    "lr a string": (_set(("optimizer", "param_groups", 0, "lr"), "0.01"), "optimizer.param_groups[0].lr",
                    "'0.01' is not a valid learning rate: not a number"),
    "lr NaN": (_set(("optimizer", "param_groups", 0, "lr"), float("nan")), "optimizer.param_groups[0].lr",
               "nan is not a valid learning rate"),
    "beta2 1.5": (_set(("optimizer", "param_groups", 0, "betas"), [0.9, 1.5]), "optimizer.param_groups[0].betas",
                  r"Invalid beta parameter at index 1: 1.5"),
    "one beta": (_set(("optimizer", "param_groups", 0, "betas"), [0.9]), "optimizer.param_groups[0].betas",
                 "expected 2 numbers"),
    "amsgrad a string": (_set(("optimizer", "param_groups", 0, "amsgrad"), "no"),
                         "optimizer.param_groups[0].amsgrad", "'no' is not a bool"),
    "foreign hyperparameter": (_set(("optimizer", "param_groups", 0, "momentum"), 0.9),
                               "optimizer.param_groups[0].momentum", "Adam has no hyperparameter 'momentum'"),
    "initial_lr negative": (_set(("optimizer", "param_groups", 0, "initial_lr"), -0.5),
                            "optimizer.param_groups[0].initial_lr", "-0.5 is not a valid learning rate"),
    "parameter listed twice": (_set(("optimizer", "param_groups", 0, "params"), [0, 0, 2, 3]),
                               "optimizer.param_groups[0].params", "parameter index 0 is listed twice"),
    "missing state tensor": (_drop("optim.1.exp_avg_sq"), "optim.1.exp_avg_sq", r"missing after 3 step\(s\)"),
    "float64 moment": (_tensor("optim.0.exp_avg", lambda v: v.astype(np.float64)), "optim.0.exp_avg",
                       "dtype float64, the optimizer keeps this parameter.s state in float32"),
    "moment of another shape": (_tensor("optim.3.exp_avg", lambda v: np.zeros((2, 2), np.float32)),
                                "optim.3.exp_avg", r"shape \(2, 2\), the parameter's is \(3,\)"),
    "moment of another optimizer": (_tensor("optim.3.momentum_buffer", lambda v: np.zeros(3, np.float32)),
                                    "optim.3.momentum_buffer", "not a state Adam keeps"),
    "state of no parameter": (_tensor("optim.9.exp_avg", lambda v: np.zeros(3, np.float32)), "optim.9.exp_avg",
                              "no param group lists this parameter"),
    "step negative": (_set(("optimizer", "state", "0", "step"), -3), "optimizer.state[0].step",
                      "-3 is not a step count"),
    "step fractional": (_set(("optimizer", "state", "2", "step"), 2.5), "optimizer.state[2].step",
                        "2.5 is not a step count"),
    "scheduler step_size 0": (_set(("scheduler", "step_size"), 0), "scheduler.step_size", "out of range"),
    "scheduler last_epoch a string": (_set(("scheduler", "last_epoch"), "3"), "scheduler.last_epoch",
                                      "'3' is not an integer"),
    "scheduler foreign entry": (_set(("scheduler", "optimizer"), None), "scheduler.optimizer",
                                "not part of StepLR's state"),
    "scheduler base_lrs": (_set(("scheduler", "base_lrs"), [0.01, 0.01]), "scheduler.base_lrs",
                           "not a list of 1 number"),
    "unknown tensor": (_tensor("extra.weights", lambda v: np.zeros(2, np.float32)), "extra.weights",
                       "neither a model tensor"),
    "extra not a dict": (_set(("extra",), [3]), "extra", "a list, not a dict"),
}


@pytest.mark.parametrize("case", RESTORE_CASES)
def test_restore_refuses_a_bad_entry_naming_it_and_changes_nothing(tmp_path, case):
    edit, entry, reason = RESTORE_CASES[case]
    path = edited_checkpoint(tmp_path, edit)
    m, opt, sched = trained(seed=1, steps=2)
    before = snapshot(m, opt, sched)
    with pytest.raises(CheckpointError, match=rf"checkpoint entry '{re.escape(entry)}': .*{reason}") as e:
        checkpoint.restore(path, m, opt, sched)
    assert e.value.entry == entry and "nothing was loaded" in str(e.value) and "\n" not in str(e.value)
    assert_same(before, snapshot(m, opt, sched))
    # the same objects still take a sound checkpoint: the refusal left them usable
    good = edited_checkpoint(tmp_path, lambda t, m: None, "good.safetensors")
    checkpoint.restore(good, m, opt, sched)
    assert opt.state_dict()["state"][0]["step"] == 3


def test_restore_of_a_half_precision_run_wants_the_dtype_its_state_is_kept_in(tmp_path):
    # float16 parameters keep their moments in float32: that is what "the dtype the run expects" means
    def half():
        bg.manual_seed(0)
        m = models.mlp(4, 3, (8,)).to(dtype=np.float16)
        try:
            opt = optim.Adam(m.parameters(), lr=0.01)
        except TypeError:
            pytest.skip("optimizers do not step float16 parameters here")
        return m, opt
    m, opt = half()
    x = bg.tensor(np.random.default_rng(0).random((6, 4)).astype(np.float16))
    for _ in range(2):
        opt.zero_grad()
        (m(x) ** 2).mean().backward()
        opt.step()
    tensors, meta = checkpoint.pack(m, opt)
    kept = tensors["optim.0.exp_avg"].dtype
    checkpoint.save(tmp_path / "ok.safetensors", tensors, meta)
    m2, opt2 = half()
    checkpoint.restore(tmp_path / "ok.safetensors", m2, opt2)
    assert_same(plain(opt.state_dict()), plain(opt2.state_dict()))
    tensors["optim.0.exp_avg"] = tensors["optim.0.exp_avg"].astype(np.float16)  # rounded: no longer the run's
    checkpoint.save(tmp_path / "bad.safetensors", tensors, meta)
    m3, opt3 = half()
    before = snapshot(m3, opt3)
    with pytest.raises(CheckpointError, match=rf"'optim.0.exp_avg': dtype float16, the optimizer keeps this "
                                              rf"parameter's state in {kept}"):
        checkpoint.restore(tmp_path / "bad.safetensors", m3, opt3)
    assert_same(before, snapshot(m3, opt3))


def test_restore_refuses_another_models_checkpoint_and_changes_nothing(tmp_path):
    m, opt, sched = trained(hidden=(5,))
    path = tmp_path / "other.safetensors"
    checkpoint.save(path, *checkpoint.pack(m, opt, sched))
    m2, opt2, sched2 = trained(hidden=(8,), seed=4)
    before = snapshot(m2, opt2, sched2)
    with pytest.raises(CheckpointError, match=r"0\.weight: checkpoint \(5, 4\) vs model \(8, 4\)"):
        checkpoint.restore(path, m2, opt2, sched2)
    assert_same(before, snapshot(m2, opt2, sched2))


# --- Optimizer.load_state_dict -------------------------------------------------------------

HYPER_CASES = [(optim.Adam, "lr", -1.0), (optim.Adam, "betas", (0.9, 1.0)), (optim.Adam, "eps", -1e-8),
               (optim.AdamW, "weight_decay", -0.1), (optim.SGD, "momentum", -0.5), (optim.RMSprop, "alpha", -1.0),
               (optim.Adadelta, "rho", 1.5), (optim.Adagrad, "lr_decay", -1.0)]


@pytest.mark.parametrize("cls,key,bad", HYPER_CASES, ids=[f"{c.__name__}-{k}" for c, k, _ in HYPER_CASES])
def test_optimizer_load_validates_hyperparameters_as_the_constructor_does(cls, key, bad):
    kw = {"momentum": 0.9} if cls is optim.SGD else {}
    _, src, _ = trained(opt_cls=cls, **kw)
    with pytest.raises(ValueError) as ctor:
        cls(models.mlp(4, 3, (8,)).parameters(), **{key: bad})
    sd = src.state_dict()
    sd["param_groups"][0][key] = bad
    _, opt, _ = trained(seed=2, steps=2, opt_cls=cls, **kw)
    before = plain(opt.state_dict())
    with pytest.raises(ValueError, match=re.escape(str(ctor.value))) as e:
        opt.load_state_dict(sd)
    assert e.value.entry == ("param_groups", 0, key) and f"['param_groups'][0]['{key}']" in str(e.value)
    assert_same(before, plain(opt.state_dict()))


def test_optimizer_load_checks_hyperparameters_together():
    _, src, _ = trained(opt_cls=optim.SGD, momentum=0.9)
    sd = src.state_dict()
    sd["param_groups"][0]["nesterov"] = True
    sd["param_groups"][0]["dampening"] = 0.5  # each valid alone; Nesterov needs zero dampening
    _, opt, _ = trained(seed=2, opt_cls=optim.SGD, momentum=0.9)
    before = plain(opt.state_dict())
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero dampening") as e:
        opt.load_state_dict(sd)
    assert e.value.entry == ("param_groups", 0)
    assert_same(before, plain(opt.state_dict()))


def test_optimizer_load_is_all_or_nothing_across_groups():
    # group 0 is sound (a new lr); group 1's moment cannot be read as numbers. Before, group 0's lr and
    # state were loaded and then group 1 raised halfway through.
    def build(seed):
        bg.manual_seed(seed)
        m = models.mlp(4, 3, (8,))
        ps = list(m.parameters())
        opt = optim.Adam([{"params": ps[:2]}, {"params": ps[2:], "lr": 0.02}], lr=0.01)
        x = bg.tensor(np.random.default_rng(seed).random((6, 4)).astype(np.float32))
        for _ in range(2):
            opt.zero_grad()
            (m(x) ** 2).mean().backward()
            opt.step()
        return opt
    sd = build(0).state_dict()
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"][3]["exp_avg"] = np.full(3, "x")
    opt = build(1)
    before = plain(opt.state_dict())
    with pytest.raises(ValueError, match=r"\['state'\]\[3\]\['exp_avg'\]: dtype <U1 is not numeric"):
        opt.load_state_dict(sd)
    assert_same(before, plain(opt.state_dict()))
    assert opt.param_groups[0]["lr"] == 0.01


def test_optimizer_load_takes_torchs_state_dict_and_refuses_its_other_weight_decay():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 4))
    for cls, tcls in ((optim.Adam, torch.optim.Adam), (optim.AdamW, torch.optim.AdamW)):
        tp = torch.nn.Parameter(torch.tensor(w0))
        topt = tcls([tp], lr=0.05, weight_decay=0.1)
        for _ in range(3):
            topt.zero_grad()
            (tp ** 3).sum().backward()
            topt.step()
        p = bg.tensor(tp.detach().numpy().copy(), requires_grad=True)
        ours = cls([p], lr=1.0)
        ours.load_state_dict(topt.state_dict())  # torch's extra keys, its 0-d step tensor
        assert ours.param_groups[0]["lr"] == 0.05 and ours.state_dict()["state"][0]["step"] == 3
        topt.zero_grad()
        (tp ** 3).sum().backward()
        topt.step()
        ours.zero_grad()
        (p ** 3).sum().backward()
        ours.step()
        np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12)
    wrong = optim.AdamW([bg.tensor(w0, requires_grad=True)])
    before = plain(wrong.state_dict())
    topt = torch.optim.Adam([torch.nn.Parameter(torch.tensor(w0))])
    with pytest.raises(ValueError, match="decoupled_weight_decay.*AdamW always decouples weight decay"):
        wrong.load_state_dict(topt.state_dict())
    assert_same(before, plain(wrong.state_dict()))


def test_torchs_sgd_state_without_a_step_count_keeps_its_momentum_buffer():
    """torch's SGD saves no step: the momentum buffer must be used by the next step, not replaced by
    the gradient as on a first step (which silently restarted the momentum before)."""
    torch = pytest.importorskip("torch")
    w0 = np.random.default_rng(1).standard_normal((3, 4))
    tp = torch.nn.Parameter(torch.tensor(w0))
    topt = torch.optim.SGD([tp], lr=0.05, momentum=0.9, nesterov=True)
    for _ in range(3):
        topt.zero_grad()
        (tp ** 3).sum().backward()
        topt.step()
    assert "step" not in topt.state_dict()["state"][0]
    p = bg.tensor(tp.detach().numpy().copy(), requires_grad=True)
    ours = optim.SGD([p], lr=0.05, momentum=0.9, nesterov=True)
    ours.load_state_dict(topt.state_dict())
    for opt, x in ((topt, tp), (ours, p)):
        opt.zero_grad()
        (x ** 3).sum().backward()
        opt.step()
    np.testing.assert_allclose(p.numpy(), tp.detach().numpy(), rtol=1e-12)


def test_a_moment_without_its_step_count_is_refused_for_adam():
    p = bg.tensor(np.ones(3), requires_grad=True)
    opt = optim.Adam([p])
    sd = {"state": {0: {"exp_avg": np.ones(3), "exp_avg_sq": np.ones(3)}}, "param_groups": opt.state_dict()["param_groups"]}
    with pytest.raises(ValueError, match=r"missing beside state \['exp_avg', 'exp_avg_sq'\]; Adam needs the step"):
        opt.load_state_dict(sd)


# --- schedulers --------------------------------------------------------------------------------

SCHED_CASES = {
    "step_size 0": (lambda o: lr_scheduler.StepLR(o, 2), "step_size", 0, "out of range"),
    "gamma a string": (lambda o: lr_scheduler.ExponentialLR(o, 0.9), "gamma", "0.9", "not a finite number"),
    "T_max 0": (lambda o: lr_scheduler.CosineAnnealingLR(o, 5), "T_max", 0, "out of range"),
    "start_factor 0": (lambda o: lr_scheduler.LinearLR(o), "start_factor", 0.0, r"out of range \(must lie in"),
    "plateau mode": (lambda o: lr_scheduler.ReduceLROnPlateau(o), "mode", "lowest", "out of range"),
    "plateau factor 2": (lambda o: lr_scheduler.ReduceLROnPlateau(o), "factor", 2.0, "must be < 1.0"),
    "negative base lr": (lambda o: lr_scheduler.StepLR(o, 2), "base_lrs", [-0.1], "must be finite and >= 0"),
    "missing last_epoch": (lambda o: lr_scheduler.StepLR(o, 2), "last_epoch", None, "missing"),
    "foreign entry": (lambda o: lr_scheduler.StepLR(o, 2), "optimizer", "x", "not part of StepLR's state"),
}


@pytest.mark.parametrize("case", SCHED_CASES)
def test_scheduler_load_validates_first_and_changes_nothing(case):
    make, key, bad, reason = SCHED_CASES[case]
    _, src_opt, _ = trained()
    saved = make(src_opt).state_dict()
    if bad is None:
        del saved[key]
    else:
        saved[key] = bad
    _, opt, _ = trained(seed=3)
    sched = make(opt)
    before, lr = copy.deepcopy(sched.state_dict()), opt.param_groups[0]["lr"]
    with pytest.raises(ValueError, match=rf"entry '{key}': .*{reason}") as e:
        sched.load_state_dict(saved)
    assert e.value.entry == (key,)
    assert_same(before, sched.state_dict())
    assert sched.optimizer is opt and opt.param_groups[0]["lr"] == lr


# --- Module.load_state_dict follows torch: it casts --------------------------------------------

def test_module_load_state_dict_casts_as_torch_does():
    torch = pytest.importorskip("torch")
    w = np.array([[1.7, -2.5, 1e-9], [3.0, 0.1, -7.25]])
    b = np.array([3, -4], dtype=np.int32)
    ours, theirs = nn.Linear(3, 2), torch.nn.Linear(3, 2)
    ours.load_state_dict({"weight": w, "bias": b})
    theirs.load_state_dict({"weight": torch.tensor(w), "bias": torch.tensor(b)})
    assert ours.weight.dtype == np.float32
    np.testing.assert_array_equal(ours.weight.numpy(), theirs.weight.detach().numpy())
    np.testing.assert_array_equal(ours.bias.numpy(), theirs.bias.detach().numpy())


# --- Trainer._resume and the CLI -----------------------------------------------------------------

RUN = ["--epochs", "1", "--hidden", "8", "--dataset", "spirals", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *RUN, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    # one Trainer for every case: a refused checkpoint leaves it as it was, so the cases cannot interfere
    return Trainer(TrainConfig(dataset="spirals", hidden=(8,), epochs=2, device="cpu", progress=False,
                               out=str(tmp_path_factory.mktemp("unused"))), log=lambda *a: None)


def _extra(*path, value=None, delete=False):
    def edit(meta):
        d = meta["extra"]
        for k in path[:-1]:
            d = d[k]
        if delete:
            del d[path[-1]]
        else:
            d[path[-1]] = value
    return edit


RESUME_CASES = {
    "loader not a dict": (_extra("loader", value="abc"), "extra.loader", "a str, not a data loader state"),
    "loader without rng": (_extra("loader", "rng", delete=True), "extra.loader", r"entries \[\], not a data loader"),
    "no loader": (_extra("loader", delete=True), "extra.loader", "missing"),
    "loader rng of another kind": (_extra("loader", "rng", "bit_generator", value="MT19937"), "extra.loader.rng",
                                   "not a valid PCG64 state"),
    "loader rng state a string": (_extra("loader", "rng", "state", "state", value="12"),
                                  "extra.loader.rng.state.state", "'12' is not an int"),
    "backend rng truncated": (_extra("backend_rng", "offset", delete=True), "extra.backend_rng",
                              r"entries \['generator', 'seed'\], not a Philox generator state"),
    "backend rng fractional": (_extra("backend_rng", "seed", value=1.5), "extra.backend_rng",
                               "seed 1.5 is not an integer"),
    "backend rng out of range": (_extra("backend_rng", "offset", value=-5), "extra.backend_rng",
                                 r"offset -5 is not an integer in \[0, 2\*\*64\)"),
    "backend rng from numpy": (_extra("backend_rng", value={"bit_generator": "PCG64", "state": {"state": 1, "inc": 1},
                                                            "has_uint32": 0, "uinteger": 0}),
                               "extra.backend_rng", "a NumPy PCG64 generator state, saved before the backends drew"),
    "epoch a string": (_extra("epoch", value="1"), "extra.epoch", "'1' is not an epoch count"),
    "epoch negative": (_extra("epoch", value=-1), "extra.epoch", "-1 is not an epoch count"),
    "rows cut": (_extra("rows", value=[]), "extra.rows", "0 rows, not a list of the 1 epochs' metrics"),
    "row without its metric": (_extra("rows", 0, "test_metric", delete=True), "extra.rows[0]", "not a metrics row"),
    "config lr a string": (_extra("config", "lr", value="fast"), "extra.config.lr", "'fast' is not a number"),
    "config without dataset": (_extra("config", "dataset", delete=True), "extra.config.dataset", "missing"),
}


def _resave(run_dir, tmp_path, edit, name="bad.safetensors"):
    tensors, meta = checkpoint.load(run_dir / "checkpoint.safetensors")
    edit(meta)
    path = tmp_path / name
    checkpoint.save(path, dict(tensors), meta)
    return path


def _trainer_state(t):
    return {"objects": snapshot(t.model, t.opt, None, [t.loader.rng]),
            "run": (t.epoch, copy.deepcopy(t.rows), t.best, t.cfg), "backend_rng": t.backend.rng_state()}


@pytest.mark.parametrize("case", RESUME_CASES)
def test_resume_refuses_damaged_run_metadata_and_changes_nothing(run_dir, trainer, tmp_path, case):
    edit, entry, reason = RESUME_CASES[case]
    path = _resave(run_dir, tmp_path, edit)
    before = _trainer_state(trainer)
    with pytest.raises(CheckpointError, match=rf"checkpoint entry '{re.escape(entry)}': .*{reason}") as e:
        trainer._resume(path)
    assert e.value.entry == entry
    after = _trainer_state(trainer)
    assert_same(before["objects"], after["objects"])
    assert before["run"] == after["run"]


def test_resume_refuses_a_bad_optimizer_entry_after_checking_nothing_was_loaded(run_dir, trainer, tmp_path):
    path = _resave(run_dir, tmp_path, lambda meta: meta["optimizer"]["param_groups"][0].update(lr=-1.0))
    before = _trainer_state(trainer)
    with pytest.raises(CheckpointError, match=r"checkpoint entry 'optimizer.param_groups\[0\].lr': -1.0 is not a "
                                              r"valid learning rate"):
        trainer._resume(path)
    after = _trainer_state(trainer)
    assert_same(before["objects"], after["objects"])
    assert before["run"] == after["run"]


def test_resume_of_the_sound_checkpoint_works(run_dir, tmp_path):
    # the edits above are what is refused: the checkpoint they start from resumes
    t = Trainer(TrainConfig(dataset="spirals", hidden=(8,), epochs=2, device="cpu", progress=False,
                            out=str(tmp_path)), log=lambda *a: None)
    t._resume(run_dir)
    tensors, _ = checkpoint.load(run_dir / "checkpoint.safetensors")
    assert t.epoch == 1 and len(t.rows) == 1
    np.testing.assert_array_equal(t.model.state_dict()["0.weight"].numpy(), tensors["model.0.weight"])


@pytest.mark.parametrize("edit,entry", [
    (lambda meta: meta["optimizer"]["param_groups"][0].update(lr=-1.0), "optimizer.param_groups[0].lr"),
    (lambda meta: meta["extra"]["loader"].update(rng=[1, 2]), "extra.loader.rng"),
])
def test_cli_resume_of_a_damaged_checkpoint_is_one_line_and_exit_2(run_dir, tmp_path, capsys, edit, entry):
    path = _resave(run_dir, tmp_path, edit)
    data = path.read_bytes()
    capsys.readouterr()
    code = main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "out"), "--resume", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"backprop-gpu: error: checkpoint entry '{entry}': ") and err.count("\n") == 1, err
    assert path.read_bytes() == data and not (tmp_path / "out" / "checkpoint.safetensors").exists()
