"""A pytest hook, imported by ``conftest.py``: the short summary's skips folded by reason alone."""
import copy
import os


def pytest_terminal_summary(terminalreporter):
    """Fold the short summary's skips by reason alone: one ``SKIPPED [count]`` line per distinct reason.

    pytest folds skips by file and line, so one reason met in forty files (a backend missing here,
    no GPU) fills forty near-identical lines. This runs before pytest prints its short summary (which
    comes last, after every plugin's summary) and hands it, for each reason met at more than one
    place, copies of the reports located at the files' common folder (the file, if only one), with the
    number of files in the reason. The reports themselves are left as they are (other plugins may read
    them), and the counts are unchanged.
    """
    skipped = terminalreporter.stats.get("skipped")
    if not skipped:
        return
    where: dict[str, set] = {}  # reason -> {(file, line)}
    for rep in skipped:
        if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3:
            path, line, reason = rep.longrepr
            where.setdefault(reason, set()).add((str(path), line))
    folded = []
    for rep in skipped:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) and len(rep.longrepr) == 3 else None
        if reason is None or len(where[reason]) == 1:
            folded.append(rep)
            continue
        files = sorted({path for path, _ in where[reason]})
        rep = copy.copy(rep)
        rep.longrepr = (os.path.commonpath(files), None,
                        reason + (f" [in {len(files)} files]" if len(files) > 1 else ""))
        folded.append(rep)
    terminalreporter.stats["skipped"] = folded
