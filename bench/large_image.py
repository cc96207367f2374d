"""A small hole in a very large photo: memory and time of `sair-inpaint` end to end.

    python bench/large_image.py                  # 8000x8000, a 40x40 hole, scale 1, 2 threads

Writes a flat 8000x8000 PNG (a smooth gradient, as the issue's measurement) and a mask with one 40x40 hole,
then runs the real command (`sair-inpaint`, the bundled model's ONNX export) in a child process
and reports its peak resident memory (ru_maxrss of the child) and wall time, next to the time
Pillow alone takes to read and write the same PNG. At scale 1 the runtime uploads and computes
only the hole's neighbourhood (`Inpainter` regions), so memory beyond the input and output
images stays bounded by the tile size. Target (issue 13): under 1 GB resident and under 5 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8000)
    ap.add_argument("--hole", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sair-large-"))
    n, k = args.size, args.hole
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / n
    img = np.stack([0.3 + 0.5 * xx, 0.2 + 0.6 * yy, 0.5 + 0.3 * xx * yy], -1)  # flat: a gradient
    img = np.clip(img * 255, 0, 255).astype(np.uint8)
    del yy, xx
    mask = np.zeros((n, n), np.uint8)
    mask[n // 2:n // 2 + k, n // 3:n // 3 + k] = 255
    Image.fromarray(img).save(tmp / "in.png", compress_level=1)
    Image.fromarray(mask).save(tmp / "mask.png")
    del img

    t = time.perf_counter()
    with Image.open(tmp / "in.png") as im:
        im.load()
        im.save(tmp / "copy.png", compress_level=1)
    pillow_s = time.perf_counter() - t

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    # the command in a child that reports its own high-water mark (VmHWM starts afresh at exec;
    # the children's ru_maxrss would also count this process's pages during the fork)
    child = ("import atexit, sys\n"
             "def hwm():\n"
             "    for line in open('/proc/self/status'):\n"
             "        if line.startswith('VmHWM'):\n"
             "            print('VmHWM', line.split()[1], file=sys.stderr)\n"
             "atexit.register(hwm)\n"
             f"sys.argv = ['sair-inpaint', {str(tmp / 'in.png')!r}, {str(tmp / 'mask.png')!r}, "
             f"'-o', {str(tmp / 'out.png')!r}, '-q', '--stats']\n"
             "from sair_deploy.cli import main\n"
             "main()\n")
    t = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    if res.returncode != 0:
        raise SystemExit(res.stderr)
    lines = res.stderr.strip().splitlines()
    rss_mb = int(next(ln for ln in lines if ln.startswith("VmHWM")).split()[1]) / 1024
    print("\n".join(ln for ln in lines if not ln.startswith("VmHWM")))
    print("\n| image | hole | scale | peak RSS MB | wall s | Pillow read+write alone s |")
    print("|---|---|---|---|---|---|")
    print(f"| {n}x{n} | {k}x{k} | 1 | {rss_mb:.0f} | {wall:.1f} | {pillow_s:.1f} |")
    print(f"\nlarge_rss_mb={rss_mb:.0f} large_wall_s={wall:.1f}")


if __name__ == "__main__":
    main()
