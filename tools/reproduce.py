"""Reproduce the paper's tables: one command from the datasets to the published numbers beside ours.

    python tools/reproduce.py --list
    python tools/reproduce.py --table demo                          # CPU, a few minutes
    python tools/reproduce.py --table ffpp --data-root /data        # /data/FaceForensics++, ...
    python tools/reproduce.py --table cross_c40 --data-root ffpp=/d/ff celeb_df=/d/cdf \
        wilddeepfake=/d/wdf dfdc=/d/dfdc --gpus 4
    python tools/reproduce.py --table ffpp --checkpoints DIR       # test only: DIR/<model>.bin
    python tools/reproduce.py --table ffpp --data-root /data --dry-run   # print the commands

The tables are those of config/paper/tables.yml, the published numbers those of
config/paper/published.yml; the work is experiments/reproduce.py's (what it checks, trains,
scores and writes).
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from errors import run_cli
from experiments.reproduce import DEFAULT_FOLDERS, RECIPES, reproduce


def parse_args(argv=None):
    from trainer.metrics import VIDEO_RULES
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--list", action="store_true", help="the tables and what each needs")
    p.add_argument("--table", help="the table to reproduce (see --list)")
    p.add_argument("--data-root", nargs="+", default=[], metavar="DIR|KEY=DIR",
                   help="a folder holding FaceForensics++/, Celeb-DF-v2/, WildDeepfake/, DFDC/, "
                        f"or KEY=DIR per dataset ({', '.join(DEFAULT_FOLDERS)})")
    p.add_argument("--checkpoints", help="test only, with DIR/<model>.bin for each model")
    p.add_argument("--protocol", choices=["original", "clean"],
                   help="checkpoint selection (default: each config's own; the paper configs "
                        "say original)")
    p.add_argument("--gpus", type=int, default=1, help="processes per training run (torchrun)")
    p.add_argument("--device", help="test.py --device (default: cuda:0 if available, else cpu)")
    p.add_argument("--out", default="reproduction", help="results folder (default reproduction)")
    p.add_argument("--runs", help="where runs are trained (config.ckpt_fold; default runs)")
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples (default 1000)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every training run (model-config keys reach test.py "
                        "too); repeatable")
    p.add_argument("--trust", action="store_true", help="test.py --trust (checkpoints that need "
                                                        "full unpickling; trusted sources only)")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    p.add_argument("--video_auc", "--video-auc", dest="video_auc", choices=VIDEO_RULES,
                   help="the videos of the video-level rows: project (each video of the dataset) "
                        "or deepfakebench (DeepfakeBench's: frames grouped by folder name); "
                        "default: the table's (deepfakebench for --table deepfakebench), else "
                        "project")
    p.add_argument("--recipe", choices=RECIPES, default="paper",
                   help="tables with recipes (deepfakebench): the paper's training recipe "
                        "(default) or DeepfakeBench's (its input size, loss and augmentation)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    return run_cli(lambda: reproduce(args), "interrupted: finished rows are kept; run the same "
                                            "command again to continue")


if __name__ == "__main__":
    sys.exit(main())
