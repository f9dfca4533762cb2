"""Checkpoints in safetensors (never pickle), written atomically.

One file holds the model state, the optimizer state (its tensors as entries,
the rest as JSON), the scheduler state, epoch/step, RNG states and the run's
config. Saving writes a temporary file in the same directory, fsyncs it and
renames it over the old one, so a crash mid-save leaves the previous
checkpoint intact.

Restoring checks everything the file carries against the live objects before
changing any of them: tensor names, shapes and dtypes, every optimizer
hyperparameter (with the optimizer constructor's validation), step counts and
moments, the scheduler's state and, through ``check_extra``, the run's own
metadata. A bad entry raises :class:`CheckpointError` naming it, e.g.
``checkpoint entry 'optimizer.param_groups[0].lr': -1.0 is not a valid
learning rate``, and nothing is loaded.

Dtypes must match exactly, a lossless upcast (float16 weights for a float32
model) included: a run's own checkpoint always has the dtypes of its model and
optimizer, so any difference means a damaged file or one from another setup,
and resuming it would not continue the saved run. To load such weights on
purpose, use ``Module.load_state_dict``, which casts as PyTorch's does.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..tape.tensor import Tensor
from ..utils.serialization import write_atomic

FORMAT = "backprop_gpu.checkpoint.v1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated, for another model, or with a bad entry.

    ``entry`` names the offending entry where there is one (``'model.0.weight'``,
    ``'optim.1.exp_avg'``, ``'optimizer.param_groups[0].lr'``, ``'extra.loader.rng'``), and
    ``reason`` says what is wrong with it; both are None otherwise.
    """

    def __init__(self, message: str, entry: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.entry, self.reason = entry, reason


def refuse(entry: str, reason: str) -> CheckpointError:
    """The error for a bad entry (raise it): ``checkpoint entry '<entry>': <reason>``.

    For ``check_extra`` functions given to :func:`restore`, which adds the file's path."""
    return CheckpointError(f"checkpoint entry '{entry}': {reason}", entry, reason)


def _layout_problem(given, like, where: str):
    """``(entry, reason)`` for the first place where ``given`` differs in layout (keys, kinds of
    values) from ``like``, plain JSON-able data; None if it has the same layout."""
    if isinstance(like, dict):
        if not isinstance(given, dict):
            return where, f"a {type(given).__name__}, not a dict"
        for k in like:
            if k not in given:
                return f"{where}.{k}", "missing"
        for k in given:
            if k not in like:
                return f"{where}.{k}", f"unexpected (expected only {', '.join(map(str, like))})"
        for k, v in like.items():
            problem = _layout_problem(given[k], v, f"{where}.{k}")
            if problem:
                return problem
        return None
    if isinstance(like, int) and not isinstance(like, bool):
        ok = isinstance(given, (int, np.integer)) and not isinstance(given, bool)
    else:
        ok = type(given) is type(like)
    return None if ok else (where, f"{given!r} is not a{'n' if type(like).__name__[0] in 'aeiou' else ''} "
                                   f"{type(like).__name__}")


def check_generator_state(entry: str, state, generator) -> None:
    """Raise :class:`CheckpointError` naming ``entry`` unless ``state`` is a state that ``generator``
    (a NumPy ``Generator`` or bit generator, or a backend's Philox generator) takes exactly; changes nothing.

    A NumPy state must have the live state's layout, be accepted by a scratch bit generator of the
    same kind, and read back unchanged (NumPy's setters silently truncate some bad values). A Philox
    state is checked by the generator's own ``check_state`` (which refuses, with a clear reason, the
    NumPy states that backends saved before they drew from Philox)."""
    check = getattr(generator, "check_state", None)
    if check is not None:
        try:
            check(state)
        except ValueError as e:
            raise refuse(entry, str(e)) from None
        return
    bitgen = getattr(generator, "bit_generator", generator)
    kind = type(bitgen).__name__
    problem = _layout_problem(state, bitgen.state, entry)
    if problem:
        raise refuse(*problem)
    scratch = type(bitgen)()
    try:
        scratch.state = state
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        raise refuse(entry, f"not a valid {kind} state ({e})") from None
    if scratch.state != state:
        raise refuse(entry, f"not a valid {kind} state (a value is out of range: it does not read back)")


def _host(v):
    return v.numpy() if isinstance(v, Tensor) else np.asarray(v)


def pack(model=None, optimizer=None, scheduler=None, extra: dict | None = None):
    """(tensors, metadata) of a training state, ready for :func:`save`."""
    tensors, meta = {}, {"format": FORMAT}
    if model is not None:
        for k, v in model.state_dict().items():
            tensors[f"model.{k}"] = _host(v)
    if optimizer is not None:
        sd = optimizer.state_dict()
        opt_meta = {"class": type(optimizer).__name__, "param_groups": sd["param_groups"], "state": {}}
        for idx, st in sd["state"].items():
            entry = {}
            for name, v in st.items():
                if isinstance(v, Tensor):
                    tensors[f"optim.{idx}.{name}"] = _host(v)
                else:
                    entry[name] = v
            opt_meta["state"][str(idx)] = entry
        meta["optimizer"] = opt_meta
    if scheduler is not None:
        meta["scheduler"] = dict(scheduler.state_dict(), _class=type(scheduler).__name__)
    meta["extra"] = extra or {}
    return tensors, meta


def remove_stale_temp_files(directory) -> list:
    """Delete the temp files that saves killed mid-write (SIGKILL, power loss) left in ``directory``.

    Saves run one at a time in a run, so any such file is dead. Returns the paths removed."""
    gone = []
    for p in Path(directory).glob(".*.safetensors.*.tmp"):
        p.unlink(missing_ok=True)
        gone.append(p)
    return gone


def save(path, tensors: dict, meta: dict) -> None:
    """Write ``tensors`` and JSON ``meta`` to ``path`` atomically (temp file, fsync, rename).

    The file gets the mode the umask allows (as ``open`` would give it), and temp files that
    earlier killed saves left in the directory are removed first."""
    from safetensors.numpy import save as st_save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    blob = st_save({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                   metadata={"backprop_gpu": json.dumps(meta, default=_json_default)})
    write_atomic(path, blob)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"cannot store {type(o).__name__} in checkpoint metadata")


def load(path):
    """(tensors, meta) from a checkpoint; :class:`CheckpointError` if it is missing or damaged."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header["__metadata__"]["backprop_gpu"])
    except (SafetensorError, ValueError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({len(data)} bytes): {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return tensors, meta


def _optimizer_state(tensors, om) -> dict:
    """The optimizer's state_dict from the file: JSON ``om`` (steps, groups) and tensors ``optim.<i>.<name>``."""
    state_meta = om.get("state", {})
    if not isinstance(state_meta, dict):
        raise refuse("optimizer.state", f"a {type(state_meta).__name__}, not a dict")
    state = {}
    for k, st in state_meta.items():
        if not (k.isascii() and k.isdigit()):
            raise refuse(f"optimizer.state[{k!r}]", "not a parameter index")
        if not isinstance(st, dict):
            raise refuse(f"optimizer.state[{k}]", f"a {type(st).__name__}, not a dict")
        for name in st:
            if name != "step":  # pack stores every tensor as a tensor entry, leaving only the step here
                raise refuse(f"optimizer.state[{k}].{name}", f"unexpected: state tensors are stored as the "
                             f"entries 'optim.{k}.<name>'")
        state[int(k)] = dict(st)
    for key, arr in tensors.items():
        if key.startswith("optim."):
            _, idx, name = (key.split(".", 2) + ["", ""])[:3]
            if not (idx.isascii() and idx.isdigit()) or not name:
                raise refuse(key, "not named optim.<parameter index>.<state name>")
            state.setdefault(int(idx), {})[name] = arr
    return {"state": state, "param_groups": om.get("param_groups")}


def _optimizer_entry(entry: tuple, tensors, om) -> str:
    """The checkpoint's name for the optimizer state_dict entry at path ``entry`` (see check_state_dict)."""
    if entry[0] == "state" and len(entry) == 3 and entry[2] != "step":
        return f"optim.{entry[1]}.{entry[2]}"  # a tensor entry, present or missing
    if entry[0] == "state" and len(entry) == 2 and str(entry[1]) not in om.get("state", {}):
        return next((k for k in tensors if k.startswith(f"optim.{entry[1]}.")), f"optimizer.state[{entry[1]}]")
    return "optimizer." + entry[0] + "".join(f"[{e}]" if isinstance(e, int) else f".{e}" for e in entry[1:])


def restore(path, model=None, optimizer=None, scheduler=None, check_extra=None) -> dict:
    """Load ``path`` into the given objects, all or nothing; returns the ``extra`` dict.

    Everything the file carries is checked before anything is modified (see the module
    docstring): its tensor names; the model's keys, shapes and dtypes (exactly the model's:
    no casting, not even a lossless upcast); the optimizer's class, hyperparameters (as its
    constructor validates them), step counts, moments and their shapes and dtypes; the
    scheduler's class and state. ``check_extra(extra)``, if given, vets the ``extra`` dict,
    also before anything is modified: it raises :func:`refuse` (naming the entry), ``ValueError``
    or ``KeyError`` to refuse the checkpoint. Every refusal is a :class:`CheckpointError`;
    one about a single entry reads ``checkpoint entry '<entry>': <reason> (in <path>; nothing
    was loaded)`` and carries ``entry``.
    """
    tensors, meta = load(path)

    def entry_error(entry, reason):
        return CheckpointError(f"checkpoint entry '{entry}': {reason} (in {path}; nothing was loaded)", entry, reason)

    def unfit(what):
        return CheckpointError(f"checkpoint {path} does not fit: {what}")

    try:
        for key in tensors:
            if not key.startswith(("model.", "optim.")):
                raise refuse(key, "neither a model tensor ('model.*') nor an optimizer one ('optim.*')")
        extra = meta.get("extra", {})
        if not isinstance(extra, dict):
            raise refuse("extra", f"a {type(extra).__name__}, not a dict")
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        if model is not None:
            try:
                model.check_state_dict(model_sd)
            except (RuntimeError, TypeError) as e:
                raise unfit(e) from None
            for k, t in model.state_dict().items():
                if model_sd[k].dtype != t.dtype:
                    raise refuse(f"model.{k}", f"dtype {model_sd[k].dtype}, the model's is {t.dtype} (a run's own "
                                 f"checkpoint has its model's dtypes; Module.load_state_dict casts, if that is meant)")
        opt_sd = None
        if optimizer is not None:
            om = meta.get("optimizer")
            if om is None:
                raise unfit("it holds no optimizer state")
            if not isinstance(om, dict):
                raise refuse("optimizer", f"a {type(om).__name__}, not a dict")
            saved_cls = om.get("class", type(optimizer).__name__)
            if saved_cls != type(optimizer).__name__:
                raise unfit(f"its optimizer state is for {saved_cls}, not {type(optimizer).__name__}")
            opt_sd = _optimizer_state(tensors, om)
            try:
                optimizer.check_state_dict(opt_sd, same_dtype=True)
            except (ValueError, TypeError) as e:
                if getattr(e, "entry", None) is None:
                    raise unfit(e) from None
                raise refuse(_optimizer_entry(e.entry, tensors, om), e.reason) from None
        # the run's metadata before the scheduler: a run configured with another scheduler is told so
        if check_extra is not None:
            try:
                check_extra(extra)
            except CheckpointError:
                raise
            except KeyError as e:
                raise unfit(f"it lacks the entry {e}") from None
            except (RuntimeError, ValueError, TypeError, AttributeError) as e:
                raise unfit(e) from None
        sched_sd = None
        if scheduler is not None:
            sm = meta.get("scheduler")
            if sm is None:
                raise unfit("it holds no scheduler state")
            if not isinstance(sm, dict):
                raise refuse("scheduler", f"a {type(sm).__name__}, not a dict")
            if sm.get("_class", type(scheduler).__name__) != type(scheduler).__name__:
                raise unfit(f"its scheduler state is for {sm['_class']}, not {type(scheduler).__name__}")
            sched_sd = {k: v for k, v in sm.items() if k != "_class"}
            if hasattr(scheduler, "check_state_dict"):
                try:
                    scheduler.check_state_dict(sched_sd)
                except (ValueError, TypeError) as e:
                    if getattr(e, "entry", None) is None:
                        raise unfit(e) from None
                    raise refuse(f"scheduler.{e.entry[0]}", e.reason) from None
    except CheckpointError as e:
        if e.entry is not None:
            raise entry_error(e.entry, e.reason) from None
        raise
    # everything checked: nothing below refuses what passed the checks above
    if model is not None:
        model.load_state_dict(model_sd)
    if optimizer is not None:
        optimizer.load_state_dict(opt_sd)
    if scheduler is not None:
        scheduler.load_state_dict(sched_sd)
    return extra
