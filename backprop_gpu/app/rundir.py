"""Run directories: every training run writes into a directory of its own.

A new run goes to ``runs/<YYYYmmdd-HHMMSS>[-N]/`` (or ``runs/NAME/`` with
``--name``), and ``runs/latest`` is a relative symlink to the newest one,
replaced atomically. Where the file system has no symlinks (Windows without
the privilege, some network shares), ``runs/latest`` is instead a small text
file holding the newest run's directory name; :func:`resolve_latest` follows
either form.

A run claims its directory with a ``run.json`` marker (run id, command line,
start time). A directory that holds another run (its marker, or the outputs
of a run from before markers existed) is refused unless the new run resumes
from a checkpoint in it (resuming continues that run) or is told to take it
over (``overwrite``). Everything is checked by :func:`plan` before anything
is written; :func:`create` then makes the directory, proves it writable, and
moves ``latest``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from pathlib import Path

from ..utils.serialization import write_atomic

#: the marker a run leaves in its directory
RUN_FILE = "run.json"
#: the link (or pointer file) to the newest run in a runs directory
LATEST = "latest"
#: where new run directories go by default
DEFAULT_ROOT = "runs"
#: what a run writes; any of them (or ``run.json``) in a directory means a run owns it
RUN_OUTPUTS = ("checkpoint.safetensors", "best.safetensors", "metrics.csv", "summary.json", "curves.png")


class RunDirError(ValueError):
    """An output directory that cannot be used: a file, another run's, or not writable."""


@dataclasses.dataclass
class RunPlan:
    """Where a run will write, decided (and checked) before anything is written.

    ``path`` is ``None`` for a new time-stamped directory under ``root``, named
    when :func:`create` makes it. ``root`` is the runs directory whose
    ``latest`` link follows new runs (``None`` for an explicit ``--out`` and for
    a resumed run continuing in place). ``resume`` is the checkpoint path with
    any ``latest`` link resolved; ``resuming`` says that ``path`` is the resumed
    run's own directory."""

    path: Path | None
    root: Path | None
    resume: Path | None = None
    resuming: bool = False
    overwrite: bool = False


def resolve_latest(path) -> Path:
    """``path`` with a ``latest`` link or pointer file in it replaced by the run directory it names.

    A run keeps writing into the directory it started in even when ``latest``
    moves on to a newer run."""
    path = Path(path)
    parts = path.parts
    for i in range(len(parts)):
        p = Path(*parts[:i + 1])
        if p.name != LATEST:
            continue
        if p.is_symlink():
            target = os.readlink(p)
        elif p.is_file() and p.stat().st_size < 4096:
            target = p.read_text().strip()  # the pointer file of a file system without symlinks
            if not target or os.sep in target or "/" in target or not (p.parent / target).is_dir():
                continue  # not a pointer: a file that happens to be called latest
        else:
            continue
        if Path(target).name == LATEST:
            raise RunDirError(f"{p} points at another link named {LATEST} ({target})")
        return Path(p.parent, target, *parts[i + 1:])
    return path


def owner(directory) -> str | None:
    """A description of the run that owns ``directory``, or ``None`` if no run does."""
    d = Path(directory)
    if not d.is_dir():
        return None
    marker = d / RUN_FILE
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
            return f"run {info.get('run_id', '?')} started {info.get('started', '?')}"
        except (OSError, ValueError):
            return f"a run whose {RUN_FILE} is unreadable"
    found = [n for n in RUN_OUTPUTS if (d / n).exists()]
    return f"an earlier run's {', '.join(found)}" if found else None


def check_name(name: str) -> str:
    """``name`` if it can name a run directory under the runs directory, else :class:`RunDirError`."""
    if (not name or name in (".", "..", LATEST) or "/" in name or os.sep in name or name.startswith(".")
            or name != name.strip()):
        raise RunDirError(f"--name {name!r} cannot name a run directory: use a plain name (no path separators, "
                          f"no leading dot, not {LATEST!r})")
    return name


def _check_not_file(path: Path, flag: str) -> None:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    if p.exists() and not p.is_dir():
        where = f"{flag} {path}" if p == path else f"{flag} {path}: {p}"
        raise RunDirError(f"{where} is a file, not a directory")


def plan(out=None, name=None, root=None, resume=None, overwrite: bool = False, check: bool = True) -> RunPlan:
    """Decide where a run writes, refusing an unusable choice before anything changes.

    ``out`` names the run directory itself; ``name`` a directory under
    ``root`` (default ``runs``); with neither, a new run gets a time-stamped
    directory under ``root`` and a resumed run continues in its checkpoint's
    directory. ``check=False`` skips the ownership check (the ranks of a
    distributed run other than rank 0 write nothing)."""
    if out is not None and (name is not None or root is not None):
        raise RunDirError("--out names the run directory itself, --name and --runs-dir one under a runs "
                          "directory: give --out or those")
    resume_path = resume_dir = None
    if resume is not None:
        resume_path = resolve_latest(resume)
        if not resume_path.exists():
            raise FileNotFoundError(f"checkpoint {resume_path} does not exist (--resume {resume})")
        resume_dir = resume_path if resume_path.is_dir() else resume_path.parent
    root = Path(DEFAULT_ROOT if root is None else root)
    if name is not None:
        path, keeps_latest, flag = root / check_name(name), True, "--name"
        _check_not_file(root, "--runs-dir")
    elif out is not None:
        path, keeps_latest, flag = resolve_latest(out), False, "--out"
    elif resume_dir is not None:
        path, keeps_latest, flag = resume_dir, False, "--resume"
    else:
        _check_not_file(root, "--runs-dir")
        return RunPlan(None, root, None, False, overwrite)
    _check_not_file(path, flag)
    resuming = resume_dir is not None and path.resolve() == resume_dir.resolve()
    if check and not resuming and not overwrite:
        who = owner(path)
        if who is not None:
            raise RunDirError(f"{path} holds another run ({who}); pass --overwrite to replace it, --resume {path} "
                              "to continue it, or choose another directory")
    return RunPlan(path, root if keeps_latest else None, resume_path, resuming, overwrite)


def probe(directory) -> None:
    """Prove that ``directory`` takes a file (written and synced, then deleted), else :class:`RunDirError`.

    Run before training, so that a read-only or full disk is found before an epoch's work is at stake."""
    test = Path(directory) / f".write-test.{os.getpid()}.tmp"
    try:
        with open(test, "wb") as f:
            f.write(b"\0" * 4096)  # a block: an empty file fits on a disk that is full
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise RunDirError(f"cannot write to the run directory {directory}: {e.strerror or e}") from None
    finally:
        try:
            test.unlink(missing_ok=True)
        except OSError:
            pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _claim(path: Path, plan_: RunPlan, command) -> dict:
    marker = path / RUN_FILE
    entry = {"command": [str(a) for a in command], "started": _now(), "pid": os.getpid()}
    if plan_.resuming and marker.is_file():
        info = json.loads(marker.read_text())
        info.setdefault("resumed", []).append(entry)  # the same run, continued
        write_atomic(marker, json.dumps(info, indent=2).encode())
        return info
    info = {"run_id": uuid.uuid4().hex[:12], **entry}
    if plan_.resume is not None:
        info["resumed_from"] = str(plan_.resume)
    if plan_.resuming or plan_.overwrite:
        if plan_.overwrite and not plan_.resuming:
            previous = owner(path)
            for n in RUN_OUTPUTS:  # the replaced run's outputs: none of them may pass for this run's
                (path / n).unlink(missing_ok=True)
            if previous is not None:
                info["replaced"] = previous
        write_atomic(marker, json.dumps(info, indent=2).encode())
        return info
    try:  # exclusive: of two runs started into one directory at once, one alone gets it
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        raise RunDirError(f"{path} holds another run (its {RUN_FILE} appeared as this run started); pass "
                          "--overwrite to replace it or choose another directory") from None
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(info, indent=2))
    return info


def _new_dir(root: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(10_000):
        path = root / (stamp if n == 0 else f"{stamp}-{n}")
        try:
            path.mkdir()  # exclusive: two runs started in the same second get -1, -2, ...
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"{root} already holds 10,000 runs started at {stamp}")


def point_latest(root, run_dir, log=None) -> Path:
    """Make ``root/latest`` name ``run_dir`` (a relative symlink, swapped in atomically; a pointer
    file where symlinks are not supported). Returns the link's path.

    A real directory called ``latest`` (the single output directory of versions
    before runs had their own) is first moved aside to a time-stamped name."""
    root, run_dir = Path(root), Path(run_dir)
    link = root / LATEST
    target = os.path.relpath(run_dir.resolve(), root.resolve())
    if link.is_dir() and not link.is_symlink():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(link.stat().st_mtime)) + "-legacy"
        aside, n = root / stamp, 0
        while aside.exists():
            n += 1
            aside = root / f"{stamp}-{n}"
        os.rename(link, aside)
        if log is not None:
            log(f"moved the run directory {link} (from a version that kept one run there) to {aside}")
    tmp = root / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(target, tmp)
    except (OSError, NotImplementedError):
        tmp.unlink(missing_ok=True)
        tmp.write_text(target + "\n")  # no symlinks here: a file naming the run (resolve_latest reads it)
    try:
        os.replace(tmp, link)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    return link


def create(plan_: RunPlan, command=(), log=None) -> Path:
    """Make (or take over) the planned run directory, prove it writable, claim it with ``run.json``
    and point ``latest`` at it. Returns the run directory."""
    try:
        if plan_.path is None:
            plan_.root.mkdir(parents=True, exist_ok=True)
            path = _new_dir(plan_.root)
        else:
            path = plan_.path
            path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = plan_.path if plan_.path is not None else plan_.root
        raise RunDirError(f"cannot create the run directory {where}: {e.strerror or e}") from None
    probe(path)
    _claim(path, plan_, command)
    if plan_.root is not None:
        try:
            point_latest(plan_.root, path, log)
        except OSError as e:
            raise RunDirError(f"cannot point {plan_.root / LATEST} at {path}: {e.strerror or e}") from None
    return path
