"""Time the reference recipe end to end on this machine (e.g. a GPU machine), then draw the sample grid.

    python bench/recipe_time.py --out runs/timed [--config reference] [--set KEY=VALUE ...]
                                [--random-text-encoder DIR] [--grid grid.png]

It runs `minicream train` and `minicream grid` in one process and prints the stage lines of the run's log.
--random-text-encoder DIR (see bench/sample.py) is for a machine without the 90 MB MiniLM weights: the model then
learns from the captions' embeddings by a random-init MiniLM of the same architecture, used again when sampling,
so the run is a real training of the same size and cost, but it is not the shipped model's conditioning.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sample import use_random_text_encoder


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default="reference")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--random-text-encoder", metavar="DIR")
    ap.add_argument("--grid", help="sample grid PNG (default OUT/grid.png)")
    args = ap.parse_args()
    if args.random_text_encoder:
        use_random_text_encoder(args.random_text_encoder)
    from minicream.cli import main as cli

    t0 = time.time()
    rc = cli(["train", "--config", args.config, "--out", args.out, *[a for s in args.set for a in ("--set", s)]])
    wall = time.time() - t0
    if rc:
        return rc
    log = Path(args.out) / "train_log.txt"
    print("\n".join(line for line in log.read_text().splitlines() if "recipe start" in line or line.split("] ")[-1][:2] in
                    {f"{i}." for i in range(1, 8)}))
    print(f"recipe wall time: {wall / 60:.1f} min")
    return cli(["grid", "--model", str(Path(args.out) / "model"), "--out", args.grid or str(Path(args.out) / "grid.png")])


if __name__ == "__main__":
    sys.exit(main())
