#!/usr/bin/env python3
"""Turn benchmark JSON outputs into the figure and the table of the docs.

Reads the files the benchmarks write with ``--json OUT`` (by default every
``docs/benchmarks/*.json``) and writes:

* ``docs/img/benchmarks.png``: one panel per area (reader, dataset, writer,
  source, mount, remote), a horizontal bar per headline row (a row with a
  goal), the ratio of arrayfs to its peer or its floor on a log scale, with
  the goal marked;
* ``docs/benchmarks/table.md``: the same figures as a Markdown table, with the
  machine and date of each run (``docs/benchmarks.md`` includes it).

Every ratio is shown as *arrayfs's advantage*: how many times faster (or
smaller) arrayfs is than the peer, so that > 1 always means arrayfs is better
and each target reads "at least". A benchmark that reports a time ratio
``ours / theirs`` with a target ``<= t`` is shown as ``theirs / ours`` with
target ``>= 1 / t``.

``--goals`` prints every row with its goal instead (``make bench`` ends
with it). The JSON schema is documented in ``benchmarks/_common.py``.

Understood inputs, recognised by their content:

* ``bench_reader.py``: ``{"machine": {...}, "rows": [{"name", "kind", "ours",
  "theirs", "ratio", "target": ">= 50", "unit": "rec/s" | "s", ...}]}``;
* ``bench_dataset.py``: ``{"machine": {...}, "quick", "rows":
  [{"measurement", "ours", "theirs_or_floor", "ratio", "target":
  ">= 50 (theirs/ours)", "ok"}]}``;
* ``bench_source.py``: ``{"machine", "arrayfs_batches_per_s",
  "grain_batches_per_s", "datarax": {...}, "checkpoint_bytes", "rss"}``;
* ``bench_mount.py`` results: ``{"arrayfs": {...}, "plain": {...},
  "ratarmount": {...}, "records": N}`` (the dict its table is printed from);
* any other file with ``"rows"``: each row needs a name (``name``,
  ``measurement`` or ``workload``) and a ``ratio``; optional ``target``
  (``">= 5"``, ``"<= 1.3 (ours/theirs)"``), ``peer``, ``ours``, ``theirs``,
  and ``higher_is_better`` (default: taken from the target, else true).

A file may add ``"date"`` (ISO date) and ``"machine"`` (dict or string); the
file's modification time stands in for a missing date.

    .venv/bin/python benchmarks/plot.py                      # docs/benchmarks/*.json
    .venv/bin/python benchmarks/plot.py a.json b.json --png out.png --table out.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INPUTS = os.path.join(ROOT, "docs", "benchmarks", "*.json")
DEFAULT_PNG = os.path.join(ROOT, "docs", "img", "benchmarks.png")
DEFAULT_TABLE = os.path.join(ROOT, "docs", "benchmarks", "table.md")

_TARGET = re.compile(r"^\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*(?:x\b)?\s*(?:\((?P<how>[^)]*)\))?")


@dataclass
class Row:
    """One comparison, normalised so that ``advantage > 1`` favours arrayfs."""

    bench: str
    workload: str
    peer: str
    ours: str = ""
    theirs: str = ""
    advantage: float = float("nan")
    target: float | None = None  # minimum advantage, when there is a target
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or not math.isfinite(self.advantage):
            return None
        return self.advantage >= self.target * (1 - 1e-9)


@dataclass
class Run:
    """One JSON file: where it came from and its rows."""

    path: str
    bench: str
    machine: str
    date: str
    quick: bool | None
    rows: list = field(default_factory=list)
    extras: list = field(default_factory=list)  # (label, value) shown under the table


# -- helpers -------------------------------------------------------------------


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def _fmt(x: float, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return ""
    a = abs(x)
    if unit in ("rec/s", "files/s", "batches/s", "MB/s", "/s"):
        for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if a >= div:
                return f"{x / div:.3g}{suf} {unit}"
        return f"{x:.3g} {unit}"
    if unit == "s":
        if a < 1e-3:
            return f"{x * 1e6:.3g} µs"
        if a < 1:
            return f"{x * 1e3:.3g} ms"
        return f"{x:.3g} s"
    if unit == "us":
        unit = "µs"
    text = f"{x:.4g}"
    return f"{text} {unit}".strip()


def _parse_target(text):
    """``(op, value, how)`` of a target string, or ``None``."""
    if not text or not isinstance(text, str):
        return None
    m = _TARGET.match(text)
    if not m:
        return None
    return m.group(1), float(m.group(2)), (m.group("how") or "").replace(" ", "")


def _machine_text(m) -> str:
    if isinstance(m, str):
        return m
    if not isinstance(m, dict):
        return ""
    cpu = m.get("cpu") or ""
    n = m.get("cpu_count") or m.get("cpus")
    parts = []
    if cpu:
        parts.append(cpu)
    if n:
        parts.append(f"{n} CPUs")
    if m.get("python"):
        parts.append(f"Python {m['python']}")
    if m.get("platform"):
        parts.append(str(m["platform"]))
    return ", ".join(parts)


def _date_of(data: dict, path: str) -> str:
    d = data.get("date") if isinstance(data, dict) else None
    if isinstance(d, str) and d:
        return d[:10]
    ts = os.path.getmtime(path)
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d")


def _normalise(ratio: float, target, higher_is_better: bool | None):
    """``(advantage, minimum advantage or None)`` from a ratio, its target
    string and its direction. A ``<=`` target, or ``higher_is_better=False``,
    means the ratio is a cost (ours / theirs): it is inverted."""
    t = _parse_target(target)
    if higher_is_better is None:
        higher_is_better = t is None or t[0] in (">=", ">")
    adv = ratio if higher_is_better else (1.0 / ratio if ratio else float("inf"))
    tgt = None
    if t is not None:
        op, value, _ = t
        if op in (">=", ">"):
            tgt = value if higher_is_better else (1.0 / value if value else None)
        else:
            tgt = (1.0 / value if value else None) if not higher_is_better else value
    return adv, tgt


# -- one parser per benchmark ------------------------------------------------


def _parse_reader(data: dict, run: Run) -> None:
    for r in data.get("rows", []):
        name = r.get("name", "?")
        unit = r.get("unit", "")
        kind = r.get("kind", "")
        floor = "floor" in name
        # Rate rows: ours / theirs, higher is better. Time rows ("s", the
        # floor comparisons): ours / floor, lower is better.
        higher = unit != "s"
        adv, tgt = _normalise(_num(r.get("ratio")), r.get("target") or None, higher)
        if kind == "info" and not r.get("target"):
            tgt = None
        run.rows.append(Row(
            run.bench, name, "bare hash + zstd floor" if floor else "array_record",
            _fmt(_num(r.get("ours")), unit), _fmt(_num(r.get("theirs")), unit), adv, tgt,
        ))


def _parse_dataset(data: dict, run: Run) -> None:
    for r in data.get("rows", []):
        name = r.get("measurement", "?")
        target = r.get("target") or ""
        t = _parse_target(target)
        # "info (ours/floor)": a row for reference, with a direction and no goal.
        info = re.match(r"info\s*\(([^)]*)\)", target)
        how = t[2] if t else info.group(1).replace(" ", "") if info else ""
        ratio = _num(r.get("ratio"))
        # The ratio is "theirs/ours" (a speed-up) or "ours/theirs" / "ours/floor" (a cost).
        higher = not how.startswith("ours/")
        adv, tgt = _normalise(ratio, None if info else target, higher)
        unit = ""
        m = re.search(r"\(([^)]*)\)\s*$", name)
        if m:
            unit = m.group(1).split(" per ")[0].strip()
        elif name.startswith("open"):
            unit = "s"
        # The TFDS benchmark shares this format; its peer is TFDS's own source.
        tfds = run.bench == "tfds"
        run.rows.append(Row(
            run.bench, ("TFDS " if tfds else "") + re.sub(r"\s*\([^)]*\)\s*$", "", name)
            + (" (CPU time)" if m and m.group(1).startswith("cpu") else ""),
            "bare hash + zstd floor" if "floor" in how else "tfds.data_source" if tfds else "array_record",
            _fmt(_num(r.get("ours")), unit), _fmt(_num(r.get("theirs_or_floor")), unit), adv, tgt,
        ))


def _parse_source(data: dict, run: Run) -> None:
    ours = _num(data.get("arrayfs_batches_per_s"))
    batch = data.get("batch", 256)
    label = f"shuffled batches of {batch}"
    if "grain_batches_per_s" in data:
        g = _num(data["grain_batches_per_s"])
        run.rows.append(Row(run.bench, f"{label} vs Grain MapDataset", "Grain + array_record",
                            _fmt(ours, "batches/s"), _fmt(g, "batches/s"), ours / g if g else float("nan"), 8.0))  # issue 19
    dr = data.get("datarax")
    if isinstance(dr, dict) and "iterate_batches_per_s" in dr:
        d = _num(dr["iterate_batches_per_s"])
        run.rows.append(Row(run.bench, f"{label} vs datarax source", f"datarax {dr.get('version', '')}".strip(),
                            _fmt(ours, "batches/s"), _fmt(d, "batches/s"), ours / d if d else float("nan"), 10.0))
    if "dataset_floor_batches_per_s" in data:
        f = _num(data["dataset_floor_batches_per_s"])
        run.rows.append(Row(run.bench, f"{label}: pipeline vs bare __getitems__", "arrayfs dataset alone",
                            _fmt(ours, "batches/s"), _fmt(f, "batches/s"), ours / f if f else float("nan"), None))
    ck = data.get("checkpoint_bytes")
    if isinstance(ck, dict):
        for n, b in sorted(ck.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0):
            run.extras.append((f"arrayfs checkpoint, N = {int(n):,} records", f"{b} bytes"))
    if isinstance(dr, dict) and "checkpoint_bytes" in dr:
        run.extras.append((f"datarax checkpoint, N = {int(dr.get('num_records', 0)):,} records",
                           f"{int(dr['checkpoint_bytes']):,} bytes"))
    rss = data.get("rss")
    if isinstance(rss, dict) and rss.get("rss_per_epoch"):
        per = rss["rss_per_epoch"]
        run.extras.append((f"RSS over {len(per)} epochs (first, last, peak)",
                           f"{per[0] / 2**20:.1f}, {per[-1] / 2**20:.1f}, {_num(rss.get('peak')) / 2**20:.1f} MiB"))


_MOUNT_ROWS = [  # key, label, higher is better, (peer, minimum advantage) or None
    ("read1_cold", "open/read/close, 1 thread, cold", True, ("ratarmount", 2.0)),
    ("read1_warm", "open/read/close, 1 thread, warm", True, ("ratarmount", 2.0)),
    ("read4_cold", "open/read/close, 4 threads, cold", True, None),
    ("read4_warm", "open/read/close, 4 threads, warm", True, None),
    ("ls_cold", "ls -l, fresh mount", False, None),
    ("ls_warm", "ls -l, again", False, None),
    ("find", "find | xargs cat", False, None),
    ("big_cold", "cat one big record, cold", False, None),
    ("big_warm", "cat one big record, warm", False, ("plain files", 0.5)),
]


def _parse_mount(data: dict, run: Run) -> None:
    res = data.get("results", data)
    ours = res.get("arrayfs", {})
    for key, label, higher, target in _MOUNT_ROWS:
        if key not in ours:
            continue
        unit = "files/s" if higher else "s"
        for peer_key, peer in (("ratarmount", "ratarmount"), ("plain", "plain files")):
            theirs = (res.get(peer_key) or {}).get(key)
            if theirs is None:
                continue
            a, b = _num(ours[key]), _num(theirs)
            adv = (a / b if b else float("nan")) if higher else (b / a if a else float("nan"))
            tgt = target[1] if target and target[0] == peer else None
            run.rows.append(Row(run.bench, label, peer, _fmt(a, unit), _fmt(b, unit), adv, tgt))


def _parse_mount_rows(data: dict, run: Run) -> None:
    """bench_mount.py ``--json``: one row per measurement with the three
    contenders' figures (files/s: higher is better; seconds: lower)."""
    for r in data["rows"]:
        label = r["measurement"]
        higher = "files/s" in label
        unit = "files/s" if higher else "s"
        target = str(r.get("target") or "")
        for peer_key, peer, word in (("ratarmount", "ratarmount", "ratarmount"), ("plain", "plain files", "plain")):
            a, b = _num(r.get("arrayfs")), _num(r.get(peer_key))
            if a != a or b != b:
                continue
            adv = (a / b if b else float("nan")) if higher else (b / a if a else float("nan"))
            # ">= 2x ratarmount, ...; >= 0.7x plain files, ...": the goal
            # of this peer is the number just before "x <peer>".
            m = re.search(rf">=\s*([0-9.]+)x {word}", target)
            tgt = float(m.group(1)) if m else None
            run.rows.append(Row(run.bench, label, peer, _fmt(a, unit), _fmt(b, unit), adv, tgt))


def _parse_generic(data: dict, run: Run) -> None:
    for r in data.get("rows", []):
        name = r.get("name") or r.get("measurement") or r.get("workload") or "?"
        adv, tgt = _normalise(_num(r.get("ratio")), r.get("target"), r.get("higher_is_better"))
        unit = r.get("unit", "")
        run.rows.append(Row(run.bench, name, r.get("peer", "peer"),
                            _fmt(_num(r.get("ours")), unit), _fmt(_num(r.get("theirs")), unit), adv, tgt))


def load(path: str) -> Run:
    """Parse one benchmark JSON file into a :class:`Run`."""
    with open(path) as f:
        data = json.load(f)
    stem = os.path.splitext(os.path.basename(path))[0]
    rows = data.get("rows") if isinstance(data, dict) else None
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "kind" in rows[0] and "name" in rows[0]:
        parser, bench = _parse_reader, "reader"
    elif isinstance(rows, list) and rows and isinstance(rows[0], dict) and "theirs_or_floor" in rows[0]:
        parser, bench = _parse_dataset, "dataset"
    elif isinstance(rows, list) and rows and isinstance(rows[0], dict) and "arrayfs_vs_ratarmount" in rows[0]:
        parser, bench = _parse_mount_rows, "mount"
    elif isinstance(data, dict) and "arrayfs_batches_per_s" in data:
        parser, bench = _parse_source, "source"
    elif isinstance(data, dict) and isinstance(data.get("results", data).get("arrayfs"), dict):
        parser, bench = _parse_mount, "mount"
    elif isinstance(rows, list):
        parser, bench = _parse_generic, stem
    else:
        raise ValueError(f"{path}: not a benchmark result this script knows (no 'rows' and no known keys)")
    if stem in AREAS and bench != stem and parser is not _parse_generic:
        bench = stem  # writer.json shares the reader's row format
    bench = data.get("bench", bench) if isinstance(data, dict) else bench
    quick = data.get("quick")
    if quick is None and isinstance(data.get("args"), dict):
        quick = data["args"].get("quick")
    run = Run(path, bench, _machine_text(data.get("machine")), _date_of(data, path), quick)
    parser(data, run)
    return run


# -- outputs -----------------------------------------------------------------


def write_table(runs: list, path: str) -> None:
    """The Markdown table (and one line per run: machine, date, mode)."""
    lines = ["<!-- generated by benchmarks/plot.py from docs/benchmarks/*.json; do not edit -->", ""]
    if not runs:
        lines += ["*No benchmark results yet: run the benchmarks with `--json docs/benchmarks/NAME.json`, "
                  "then `.venv/bin/python benchmarks/plot.py`.*", ""]
    else:
        lines += ["| benchmark | workload | arrayfs | peer | peer's figure | arrayfs advantage | target | |",
                  "| --- | --- | --- | --- | --- | ---: | ---: | --- |"]
        for run in runs:
            for r in run.rows:
                adv = f"{r.advantage:.2f}x" if math.isfinite(r.advantage) else "n/a"
                tgt = f">= {r.target:.3g}x" if r.target is not None else ""
                met = {True: "met", False: "**missed**", None: ""}[r.met]
                workload = r.workload.replace("|", "\\|")
                lines.append(f"| {r.bench} | {workload} | {r.ours} | {r.peer} | {r.theirs} | {adv} | {tgt} | {met} |")
        lines.append("")
        extras = [(run.bench, k, v) for run in runs for k, v in run.extras]
        if extras:
            lines += ["| benchmark | figure | value |", "| --- | --- | --- |"]
            lines += [f"| {b} | {k} | {v} |" for b, k, v in extras]
            lines.append("")
        lines.append("Runs:")
        lines.append("")
        for run in runs:
            mode = {True: "quick run", False: "full run", None: ""}[run.quick]
            bits = [b for b in (run.date, run.machine, mode) if b]
            lines.append(f"- `{os.path.basename(run.path)}` ({run.bench}): {'; '.join(bits)}")
        lines.append("")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(lines))


#: Panel of each benchmark's rows (other benchmark names get their own panel).
AREAS = {"reader": "reader", "transpose": "reader", "dataset": "dataset", "scale": "dataset",
         "elastic": "source", "tfds": "dataset", "writer": "writer", "convert": "writer", "source": "source",
         "mount": "mount", "listing": "mount", "remote": "remote"}
PANEL_ORDER = ["reader", "dataset", "writer", "source", "mount", "remote"]


def headline(rows: list) -> list:
    """The rows worth a bar: those with a goal, comparing like with like
    (a remote figure against a local one is a cost, not a race)."""
    out = []
    for r in rows:
        if r.target is None or not math.isfinite(r.advantage) or r.advantage <= 0:
            continue
        if r.bench == "remote" and "local" in f"{r.peer} {r.workload}".lower():
            continue
        out.append(r)
    return out


def _is_floor(r: Row) -> bool:
    return "floor" in f"{r.peer} {r.workload}".lower()


def write_png(runs: list, path: str) -> None:
    """One panel per area (reader, dataset, writer, source, mount, remote):
    a horizontal bar per headline row, arrayfs's advantage on a log scale,
    the goal as a black tick and parity (1x) as a line; rows against the
    peer in solid colour and rows against the floor hatched beside them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict = {}
    for run in runs:
        for r in headline(run.rows):
            panels.setdefault(AREAS.get(r.bench, r.bench), []).append(r)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not panels:
        fig, ax = plt.subplots(figsize=(8, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "No benchmark results yet (benchmarks/plot.py reads docs/benchmarks/*.json)",
                ha="center", va="center")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return
    names = [a for a in PANEL_ORDER if a in panels] + sorted(a for a in panels if a not in PANEL_ORDER)
    for a in names:  # the peer's row first, the floor's right under it
        panels[a].sort(key=lambda r: (r.workload.split(":")[0] if ":" in r.workload else r.workload, _is_floor(r)))
    heights = [len(panels[a]) * 0.42 + 0.9 for a in names]
    fig, axes = plt.subplots(len(names), 1, figsize=(11, sum(heights) + 1.2),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    colours = {True: "#2e7d32", False: "#c62828", None: "#78909c"}
    allv = [v for a in names for r in panels[a] for v in (r.advantage, r.target or 1.0)] + [1.0]
    lo, hi = min(allv) / 1.6, max(allv) * 80  # room for the labels right of the bars
    from matplotlib.ticker import FuncFormatter

    for ax, a in zip(axes[:, 0], names):
        rows = panels[a]
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows):
            ax.barh(y, r.advantage - 1.0, left=1.0, color=colours[r.met], height=0.62,
                    hatch="//" if _is_floor(r) else None, edgecolor="white" if _is_floor(r) else None)
            ax.plot([r.target, r.target], [y - 0.42, y + 0.42], color="black", linewidth=2.2)
            right = max(r.advantage, r.target, 1.0)
            peer = r.peer if len(r.peer) <= 30 else r.peer[:29] + "…"
            ax.text(right * 1.08, y, f"{r.advantage:.2f}x vs {peer} (goal {r.target:.2g}x)", va="center", fontsize=7.5)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.set_yticks(ys)
        ax.set_yticklabels([r.workload for r in rows], fontsize=8)
        ax.set_title(a, fontsize=9, loc="left", fontweight="bold")
        ax.grid(axis="x", which="both", alpha=0.25)
    axes[-1, 0].set_xlabel("arrayfs advantage (log scale; > 1x: arrayfs faster or smaller)\nhatched: against the "
                           "floor, as floor time / arrayfs time")
    dates = sorted({run.date for run in runs})
    machines = sorted({run.machine for run in runs if run.machine})
    title = "arrayfs vs peers and floors" + (f", {dates[0]}" if len(dates) == 1 else f", {dates[0]} to {dates[-1]}")
    if len(machines) == 1:
        title += f"\n{machines[0]}"
    fig.suptitle(title, fontsize=10)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    axes[0, 0].legend(handles=[Patch(color=colours[True], label="goal met"),
                               Patch(color=colours[False], label="goal missed"),
                               Line2D([], [], color="black", linewidth=2.2, label="goal")],
                      loc="lower right", fontsize=7, framealpha=0.9)
    # Leave the suptitle its own strip above the first panel.
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.6 / fig.get_figheight()))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_goals(runs: list) -> int:
    """Every row that has a goal, area by area; returns how many missed."""
    missed = 0
    print(f"{'area':8}  {'workload':62}  {'peer':30}  {'advantage':>9}  {'goal':>7}  ")
    for run in sorted(runs, key=lambda r: PANEL_ORDER.index(AREAS.get(r.bench, "remote"))
                      if AREAS.get(r.bench, "remote") in PANEL_ORDER else 99):
        for r in run.rows:
            if r.target is None:
                continue
            ok = r.met
            missed += ok is False
            print(f"{AREAS.get(r.bench, r.bench):8}  {r.workload[:62]:62}  {r.peer[:30]:30}  {r.advantage:8.2f}x  "
                  f"{r.target:6.2f}x  {'met' if ok else 'MISSED'}")
    return missed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="default inputs: docs/benchmarks/*.json")
    ap.add_argument("inputs", nargs="*", help="benchmark JSON files (default: docs/benchmarks/*.json)")
    ap.add_argument("--png", default=DEFAULT_PNG, help="figure to write (default docs/img/benchmarks.png)")
    ap.add_argument("--table", default=DEFAULT_TABLE, help="Markdown table to write (default docs/benchmarks/table.md)")
    ap.add_argument("--goals", action="store_true", help="only print every row with its goal (no files written)")
    args = ap.parse_args(argv)
    paths = args.inputs or sorted(glob.glob(DEFAULT_INPUTS))
    runs = []
    for p in paths:
        try:
            runs.append(load(p))
        except (OSError, ValueError, AttributeError) as e:
            print(f"plot.py: skipping {p}: {e}", file=sys.stderr)
    if args.goals:
        missed = print_goals(runs)
        print(f"\n{missed} goal(s) missed (advantage = arrayfs over the peer; for floor rows, floor time / ours)")
        return 0
    write_table(runs, args.table)
    write_png(runs, args.png)
    rows = sum(len(r.rows) for r in runs)
    print(f"{len(runs)} result file(s), {rows} workload(s) -> {args.png}, {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
