"""Checkpoints in safetensors (never pickle), written atomically.

One file holds the model state, the optimizer state (its tensors as entries,
the rest as JSON), the scheduler state, epoch/step, RNG states and the run's
config. Saving writes a temporary file in the same directory, fsyncs it and
renames it over the old one, so a crash mid-save leaves the previous
checkpoint intact. Loading checks everything against the live objects before
changing any of them.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..tape.tensor import Tensor

FORMAT = "backprop_gpu.checkpoint.v1"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, truncated, or for another model."""


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


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes it 0600
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


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


def _optimizer_state(tensors, meta):
    om = meta["optimizer"]
    state = {int(k): dict(v) for k, v in om["state"].items()}
    for key, arr in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = arr
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in om["param_groups"]]
    return {"state": state, "param_groups": groups}


def restore(path, model=None, optimizer=None, scheduler=None, check_extra=None) -> dict:
    """Load ``path`` into the given objects, all or nothing; returns the ``extra`` dict.

    A checkpoint for another architecture raises :class:`CheckpointError`
    naming the mismatched entries, before anything is modified.
    ``check_extra(extra)``, if given, vets the ``extra`` dict: it raises ``ValueError``
    (or ``KeyError``) to refuse the checkpoint, also before anything is modified.
    """
    tensors, meta = load(path)
    model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    opt_sd = None
    try:
        if model is not None:
            model.check_state_dict(model_sd)
        if optimizer is not None:
            if "optimizer" not in meta:
                raise ValueError("it holds no optimizer state")
            saved_cls = meta["optimizer"].get("class", type(optimizer).__name__)
            if saved_cls != type(optimizer).__name__:
                raise ValueError(f"its optimizer state is for {saved_cls}, not {type(optimizer).__name__}")
            opt_sd = _optimizer_state(tensors, meta)
            optimizer.check_state_dict(opt_sd)
        if check_extra is not None:
            check_extra(meta.get("extra", {}))
        if scheduler is not None and "scheduler" not in meta:
            raise ValueError("it holds no scheduler state")
        if scheduler is not None and meta["scheduler"].get("_class", type(scheduler).__name__) != \
                type(scheduler).__name__:
            raise ValueError(f"its scheduler state is for {meta['scheduler']['_class']}, "
                             f"not {type(scheduler).__name__}")
    except KeyError as e:
        raise CheckpointError(f"checkpoint {path} does not fit: it lacks the entry {e}") from None
    except (RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise CheckpointError(f"checkpoint {path} does not fit: {e}") from None
    if model is not None:
        model.load_state_dict(model_sd)
    if optimizer is not None:
        optimizer.load_state_dict(opt_sd)
    if scheduler is not None:
        scheduler.load_state_dict({k: v for k, v in meta["scheduler"].items() if k != "_class"})
    return meta.get("extra", {})
