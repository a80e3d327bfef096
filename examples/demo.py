"""The arrayfs demo: a real dataset as ArrayRecord shards, mounted, looked at, trained on.

Steps (each announced as it runs):

1. pack scikit-learn's digits (1,797 real 8x8 handwritten digits, shipped
   inside the scikit-learn package: nothing is downloaded) into 4 ArrayRecord
   shards, one msgpack record per image;
2. ``arrayfs mount 'digits-*.array_record' MNT`` and look with ordinary
   tools: ``ls -l | head``, the summary file, ``stat``, the raw bytes of one
   record, and that record decoded and drawn in the terminal;
3. ``arrayfs unmount MNT``;
4. train a small Flax NNX model through ``ArrayRecordSourceModule`` and
   ``from_source`` and print the loss going down.

Everything lives in a temporary directory that is removed at the end; the
mount is taken down even on Ctrl-C or an error.

Usage: ``python examples/demo.py [--keep DIR] [--epochs N]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def shell(cmd: str, cwd: str | None = None) -> None:
    """Run ``cmd`` in a shell, echoing it first as a user would type it."""
    print(f"$ {cmd}", flush=True)
    subprocess.run(cmd, shell=True, cwd=cwd, check=True)


def arrayfs(*args: str) -> None:
    print("$ arrayfs " + " ".join(_quote(a) for a in args), flush=True)
    subprocess.run([sys.executable, "-m", "arrayfs", *args], check=True)


def _quote(a: str) -> str:
    return f"'{a}'" if any(c in a for c in "*? ") else a


def draw_digit(image, label) -> None:
    shades = " .:-=+*#%@"
    print(f"record decoded: label {int(label)}")
    for row in image.reshape(8, 8):
        print("   " + "".join(shades[min(int(v * 9.99), 9)] * 2 for v in row))


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/mounts") as f:
        return any(line.split()[1] == real for line in f)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="work in DIR and keep the shards there")
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)

    work = args.keep or tempfile.mkdtemp(prefix="arrayfs-demo-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, "data")
    mnt = os.path.join(work, "mnt")
    os.makedirs(mnt, exist_ok=True)
    # SIGTERM takes the same clean-up path as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.perf_counter()
    try:
        step("1/4 Packing scikit-learn's digits (1,797 real 8x8 images) into ArrayRecord shards")
        from train_digits import pack_digits

        pattern = pack_digits(data, 4)
        shell(f"ls -l {data}")

        step("2/4 Mounting them: every record becomes a read-only file")
        arrayfs("mount", pattern, mnt)
        shell("ls -l | head -n 6", cwd=mnt)
        shell("ls | wc -l", cwd=mnt)
        shell("ls .shards/", cwd=mnt)
        shell("head -c 600 .arrayfs.json; echo ' ...'", cwd=mnt)
        shell("stat -c '%n: %s bytes' 0042", cwd=mnt)
        shell("head -c 96 0042 | od -A d -t x1 | head -n 4", cwd=mnt)
        import numpy as np

        from arrayfs.nnx.decode import decode_msgpack

        with open(os.path.join(mnt, "0042"), "rb") as f:
            fields = decode_msgpack(f.read())
        draw_digit(np.asarray(fields["image"]), fields["label"])
        shell("cat 0042 | md5sum; cat .shards/digits-00000-of-00004.array_record/42 | md5sum", cwd=mnt)

        step("3/4 Unmounting")
        arrayfs("unmount", mnt)

        step(f"4/4 Training a Flax NNX MLP for {args.epochs} epochs from the same shards "
             "(ArrayRecordSourceModule + from_source)")
        import train_digits

        train_digits.main(["--data", data, "--epochs", str(args.epochs)])
        print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        if is_mounted(mnt):
            subprocess.run([sys.executable, "-m", "arrayfs", "unmount", mnt], check=False)
        if not args.keep:
            if not is_mounted(mnt):
                shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
