"""Robustness to real-world degradations: the DeeperForensics-1.0 grid in one command.

    python tools/robustness.py --config runs/Recce/<id>/config.yml [--ckpt P] [--types GB JQ]
        [--levels 1 3 5] [--out DIR] [--device cpu]
    python tools/robustness.py --config C --protocol frames --videos test_videos.csv [--frames 32]

``--protocol crops`` (the default) distorts the face crops of the config's test split;
``--protocol frames`` distorts the raw videos of ``--videos`` (a CSV ``path,label``) whole, then
crops them, in the published order. Writes ``robustness.csv``, ``.md`` and ``.png`` into ``--out``
(default: ``robustness/`` beside the checkpoint); resumable. The work is
experiments/robustness.py's.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dataset.perturb import LEVELS, TYPES
from errors import run_cli
from experiments.robustness import robustness


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--ckpt")
    p.add_argument("--device")
    p.add_argument("--out")
    p.add_argument("--types", nargs="+", default=list(TYPES), help=f"of {', '.join(LEVELS)}")
    p.add_argument("--levels", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    p.add_argument("--trust", action="store_true")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--protocol", choices=["crops", "frames"], default="crops",
                   help="crops: distort the test split's face crops (default); frames: distort "
                        "whole videos of --videos, then crop (the published order)")
    p.add_argument("--videos", help="frames: a CSV path,label of the raw test videos")
    p.add_argument("--detector", default="dlib", help="frames: face detector (dlib, retinaface)")
    p.add_argument("--detector_weights", help="frames: retinaface weights file")
    p.add_argument("--frames", type=int, default=32, help="frames: crops per video (32)")
    p.add_argument("--margin", type=float, default=1.3, help="frames: crop margin (1.3)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    return run_cli(lambda: robustness(args), "interrupted: the finished rows are in "
                                             "robustness.csv; run again to continue")


if __name__ == "__main__":
    sys.exit(main())
