"""Turn pytest-benchmark JSON into the results table of benchmarks/README.md.

usage: python benchmarks/report.py results/cpu.json [more.json ...] [--write]

Files written by ``benchmarks/interleaved.py`` get their own table of
same-process, pair-by-pair ratios. In pytest-benchmark files each row's ratio to torch is against the fastest torch row of the same
workload on the same kind of device in the same file (same run), and its ratio
to the floor against that workload's floor row, when there is one.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def _kind(device: str) -> str:
    return "gpu" if str(device).startswith("cuda") else "cpu"


def table(path: Path) -> str:
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "workload" not in info:
            continue
        # a row timed inside its own processes (the MPI runs) reports that time in step_ms
        median = info["step_ms"] / 1e3 if "step_ms" in info else b["stats"]["median"]
        iqr = 0.0 if "step_ms" in info else b["stats"]["iqr"]
        impl = info["impl"] + (f" (scaling efficiency {info['scaling_efficiency']:.0%})"
                               if "scaling_efficiency" in info else "")
        rows.append({"workload": info["workload"], "impl": impl, "role": info["role"],
                     "device": info.get("device", "cpu"), "median": median, "iqr": iqr,
                     "rounds": b["stats"]["rounds"]})
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    lines = [f"**{Path(path).name}** — {data.get('datetime', '')[:16]}, {cpu}, "
             f"{machine.get('python_implementation', '')} {machine.get('python_version', '')}; threads "
             f"{next((b['extra_info'].get('threads') for b in data['benchmarks'] if 'extra_info' in b), '?')}.",
             "", "| workload | implementation | device | median | IQR | × torch | × floor |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    order = []
    for r in rows:
        if r["workload"] not in order:
            order.append(r["workload"])
    role_rank = {"ours": 0, "torch": 1, "reference": 2, "floor": 3}
    for w in order:
        group = [r for r in rows if r["workload"] == w]
        floor = min((r["median"] for r in group if r["role"] == "floor"), default=None)
        for r in sorted(group, key=lambda r: (role_rank.get(r["role"], 9), r["median"])):
            torch = min((t["median"] for t in group if t["role"] == "torch" and _kind(t["device"]) == _kind(
                r["device"])), default=None)
            vs_torch = f"{r['median'] / torch:.2f}" if torch and r["role"] != "torch" else ""
            vs_floor = f"{r['median'] / floor:.2f}" if floor and r["role"] != "floor" else ""
            name = f"**{r['impl']}**" if r["role"] == "ours" else r["impl"]
            lines.append(f"| {w} | {name} | {r['device']} | {_fmt_time(r['median'])} | {_fmt_time(r['iqr'])} | "
                         f"{vs_torch} | {vs_floor} |")
    return "\n".join(lines)


def interleaved_table(path: Path, data: dict) -> str:
    """The table of ``benchmarks/interleaved.py``'s JSON: medians, pair-by-pair ratios and a summary line.

    Workloads whose set-up cross-check against torch failed are listed with no time."""
    cores = f" ({data['cores']} cores)" if "cores" in data else ""
    if "loadavg" in data:
        cores += f", load average {data['loadavg'][0]:.1f} at the start and {data['loadavg'][1]:.1f} at the end"
    lines = [f"**{Path(path).name}** — interleaved in one process, {data['datetime'][:16]}, {data['cpu']}{cores}, "
             f"CPython {data['python']}, NumPy {data['numpy']}, torch {data['torch']}; threads {data['threads']}. "
             "Ratios are medians of per-pair ratios (ours timed right next to the other), IQR in brackets; "
             "below 1 is faster than torch."]
    vs_torch, failed = {}, []
    groups: dict[str, list] = {}
    for workload, r in data["results"].items():
        groups.setdefault(r.get("group", "other"), []).append((workload, r))
    for group, rows in groups.items():
        lines += ["", f"*{group}*", "", "| workload | ours | torch | floor | ours / torch | ours / floor | pairs |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for workload, r in rows:
            if "error" in r:
                failed.append(workload)
                lines.append(f"| {workload} | cross-check failed: {r['error']} | | | | | |")
                continue
            med = r["median_s"]
            vs_torch[workload] = r["ratios"]["torch"]["median"]

            def ratio(k):
                v = r["ratios"].get(k)
                return f"**{v['median']:.2f}** ({v['q25']:.2f}–{v['q75']:.2f})" if v else ""
            lines.append(f"| {workload} | {_fmt_time(med['ours'])} | {_fmt_time(med['torch'])} | "
                         f"{_fmt_time(med['floor']) if 'floor' in med else ''} | {ratio('torch')} | "
                         f"{ratio('floor')} | {r['pairs']} |")
    if len(vs_torch) > 1:
        median = statistics.median(vs_torch.values())
        above = [w for w, v in vs_torch.items() if v > 1.0]
        lines += ["", f"{len(vs_torch)} workloads timed: median ours / torch **{median:.2f}**; "
                      f"{len(above)} above 1.0× torch" + (f" ({'; '.join(above)})" if above else "") + "."
                      + (f" {len(failed)} failed their cross-check and are not timed." if failed else "")]
    return "\n".join(lines)


def memory_table(path: Path, data: dict) -> str:
    """The table of ``benchmarks/bench_memory.py``'s JSON: peak and steady MB per training step, ours / torch."""
    lines = [f"**{Path(path).name}** — memory of a training step, each side in its own process, {data['cpu']}, "
             f"CPython {data['python']}, NumPy {data['numpy']}, torch {data['torch']}: MB above the resident set "
             f"before the model was built; peak = the high-water mark over {data['steps']} steps after 2 warm-up "
             "steps, steady = resident after the warm-up.", "",
             "| workload | ours peak | torch peak | ours / torch | ours steady | torch steady |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for workload, r in data["results"].items():
        o, t = r["ours"], r["torch"]
        lines.append(f"| {workload} | {o['peak_mb']:.1f} | {t['peak_mb']:.1f} | **{r['peak_ratio']:.2f}** | "
                     f"{o['steady_mb']:.1f} | {t['steady_mb']:.1f} |")
    ratios = [r["peak_ratio"] for r in data["results"].values()]
    if ratios:
        lines += ["", f"Peak ours / torch: median **{statistics.median(ratios):.2f}**, highest {max(ratios):.2f}."]
    return "\n".join(lines)


def render(path: Path) -> str:
    data = json.loads(Path(path).read_text())
    kind = data.get("kind")
    if kind == "interleaved":
        return interleaved_table(path, data)
    return memory_table(path, data) if kind == "memory" else table(path)


def main(argv):
    write = "--write" in argv
    files = [a for a in argv if not a.startswith("--")] or sorted(str(p) for p in (HERE / "results").glob("*.json"))
    body = "\n\n".join(render(Path(f)) for f in files)
    if write:
        readme = HERE / "README.md"
        text = readme.read_text()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        readme.write_text(text[:start] + "\n" + body + "\n" + text[end:])
        print(f"updated {readme}")
    else:
        print(body)


if __name__ == "__main__":
    main(sys.argv[1:])
