"""Make the built-in demo dataset (offline, deterministic, a few seconds on 2 cores).

    python tools/make_demo_dataset.py                # into data/demo
    python tools/make_demo_dataset.py --out /tmp/demo --seed 1

Synthetic self-blended faces for trying the pipeline, not a benchmark (see dataset/demo.py).
``--out`` must be missing, empty, or hold earlier demo data: nothing else is ever replaced.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.demo import make_demo_dataset
from errors import run_cli


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="data/demo")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    start = time.time()

    def body():
        counts = make_demo_dataset(args.out, args.seed)
        for split, (real, fake) in counts.items():
            print(f"faceforensics {split}: {real} real, {fake} fake frames")
        print(f"written to {args.out} (faceforensics/, celeb_df/) in {time.time() - start:.1f} s")
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
