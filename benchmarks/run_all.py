"""Run every benchmark, each side by side with its peer, and print ratios.

``python benchmarks/run_all.py [--quick] [--out DIR] [--only NAME ...]``

Each benchmark is its own script (run it alone for its options); this runs
them one after another, writes each one's JSON to ``DIR`` (default
``bench-out/``) where the script supports it, then draws
``docs/img/benchmarks.png`` and ``docs/benchmarks/table.md`` from the JSON
with ``benchmarks/plot.py`` when ``--docs`` is given.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (script, takes --json)
BENCHMARKS = {
    "reader": ("bench_reader.py", True),
    "writer": ("bench_writer.py", True),
    "dataset": ("bench_dataset.py", True),
    "source": ("bench_source.py", True),
    "mount": ("bench_mount.py", True),
    "transpose": ("bench_transpose.py", True),
    "elastic": ("bench_elastic.py", True),
    "convert": ("bench_convert.py", True),
    "remote": ("bench_remote.py", True),
    "scale": ("bench_scale.py", True),
    "tfds": ("bench_tfds.py", True),  # needs the TensorFlow venv: make tfds-fixture
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data sets (a few minutes in all)")
    ap.add_argument("--out", default="bench-out", help="directory for the JSON results")
    ap.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    ap.add_argument("--docs", action="store_true", help="copy the JSON to docs/benchmarks and redraw the plot")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    failed = []
    for name in args.only or list(BENCHMARKS):
        script, takes_json = BENCHMARKS[name]
        cmd = [sys.executable, os.path.join(HERE, script)]
        if args.quick and name != "transpose":
            cmd.append("--quick")
        if args.quick and name == "transpose":
            cmd += ["--mb", "10"]
        if not args.quick and name == "convert":
            cmd.append("--full")  # 500 MB: at the default 50 MB, Beam's start-up (about 4 s) is most of the time
        out = os.path.join(args.out, f"{name}.json")
        if takes_json:
            cmd += ["--json", out]
        if name == "mount" and args.docs:
            cmd += ["--markdown", os.path.join(HERE, "..", "docs", "benchmarks", "listing.md")]
        if name == "scale" and args.docs:
            cmd += ["--writer", "--markdown", os.path.join(HERE, "..", "docs", "benchmarks", "scale.md")]
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {name}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if args.docs:
        docs = os.path.join(HERE, "..", "docs", "benchmarks")
        os.makedirs(docs, exist_ok=True)
        for name in BENCHMARKS:
            src = os.path.join(args.out, f"{name}.json")
            if os.path.exists(src):
                with open(src, "rb") as f, open(os.path.join(docs, f"{name}.json"), "wb") as g:
                    g.write(f.read())
        subprocess.call([sys.executable, os.path.join(HERE, "plot.py")])
    outs = [os.path.join(args.out, f"{n}.json") for n in BENCHMARKS if os.path.exists(os.path.join(args.out, f"{n}.json"))]
    if outs:
        print("\n=== goals (issue 19): every row with its goal, from this run's JSON\n", flush=True)
        subprocess.call([sys.executable, os.path.join(HERE, "plot.py"), "--goals", *outs])
    if failed:
        print(f"benchmarks that failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
