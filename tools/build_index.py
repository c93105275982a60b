r"""Write (or check) the index files the loaders read, from face crops laid out as in the README.

    python tools/build_index.py faceforensics --root data/FF++ --splits data/FF++/splits \
        --compression c23
    python tools/build_index.py wilddeepfake --root data/WildDeepfake
    python tools/build_index.py celebdf --root data/Celeb-DF-v2      # checks and counts only
    python tools/build_index.py dfdc --root data/DFDC                # checks and counts only

The sub-commands come from the dataset layouts' registry (dataset/registry.py): a layout module
that registers an index builder gets its sub-command here without any change to this file. FF++
and WildDeepfake get the original's pickles (torch.save of lists), so the original code reads them
too. An index is never replaced by an empty one.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from dataset import LAYOUTS
from errors import flags, run_cli


def main(argv=None):
    p = argparse.ArgumentParser(description="Build dataset index files.")
    sub = p.add_subparsers(dest="dataset", required=True)
    builders = {}
    for layout in LAYOUTS.values():
        if layout.index_name and layout.build_index:
            sp = sub.add_parser(layout.index_name, help=f"{layout.name}: {layout.description}")
            layout.add_arguments(sp)
            builders[layout.index_name] = layout.build_index
    args = p.parse_args(argv)

    def body():
        problems = 0
        with flags(archives="--archives", root="--root"):  # the layouts speak of their arguments
            for line in builders[args.dataset](args):
                problems += line.startswith("problem:")
                print(line, file=sys.stderr if line.startswith(("warning:", "problem:"))
                      else sys.stdout)
        return 1 if problems else 0  # per-file problems: the rest is done, the status says so
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
