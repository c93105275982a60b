"""Write the index files the loaders read, from face crops laid out as in the README.

    python tools/build_index.py faceforensics --root data/FF++ --splits data/FF++/splits --compression c23
    python tools/build_index.py wilddeepfake --root data/WildDeepfake
    python tools/build_index.py celebdf --root data/Celeb-DF-v2      # checks and counts only
    python tools/build_index.py dfdc --root data/DFDC                # checks and counts only

FF++ and WildDeepfake get the original's pickles (torch.save of lists), so the original code reads
them too; Celeb-DF and DFDC are read straight from their own list / metadata files.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset.builders import (build_faceforensics, build_wilddeepfake, check_celebdf,  # noqa: E402
                              check_dfdc)
from dataset.layouts import COMPRESSIONS, FF_METHODS  # noqa: E402
from errors import UserError, one_line  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description="Build dataset index files.")
    p.add_argument("dataset", choices=["faceforensics", "celebdf", "wilddeepfake", "dfdc"])
    p.add_argument("--root", required=True, help="the folder of face crops")
    p.add_argument("--splits", help="FF++: folder with the official train.json, val.json, test.json")
    p.add_argument("--compression", default="c23", choices=COMPRESSIONS)
    p.add_argument("--methods", nargs="+", default=list(FF_METHODS))
    args = p.parse_args(argv)
    try:
        if args.dataset == "faceforensics":
            counts, missing = build_faceforensics(args.root, args.splits or
                                                  os.path.join(args.root, "splits"),
                                                  args.compression, args.methods)
            for folder in missing[:10]:
                print(f"warning: no frames in {folder}", file=sys.stderr)
            if len(missing) > 10:
                print(f"warning: ... and {len(missing) - 10} more empty video folders", file=sys.stderr)
            for split, (real, fake) in counts.items():
                print(f"{split}_{args.compression}.pickle: {real} real, {fake} fake frames")
        elif args.dataset == "wilddeepfake":
            for name, n in build_wilddeepfake(args.root).items():
                print(f"{name}.pickle: {n} frames")
        else:
            check = check_celebdf if args.dataset == "celebdf" else check_dfdc
            for name, n in check(args.root).items():
                print(f"{name}: {n}")
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
