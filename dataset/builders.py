"""Index builders: face crops laid out as SPEC section 5 -> the index files the loaders read.

They write the original's formats (``torch.save`` of lists), so the original code reads them too.
"""
import glob
import json
import os

from errors import UserError

from .index import save_pickle_index
from .layouts import FF_METHODS, FF_SPLITS, IMAGE_EXTS


def _frames(folder, root):
    return sorted(os.path.relpath(p, root).replace(os.sep, "/")
                  for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTS))


def build_faceforensics(root, splits_dir, compression="c23", methods=FF_METHODS,
                        original="youtube"):
    """One ``<split>_<compression>.pickle`` per split from the official ``<split>.json`` pairs.

    Returns ``{split: (n_real, n_fake)}``. A video folder that is missing is reported, not fatal:
    face extraction may have found no face in it.
    """
    counts, missing = {}, []
    for split in FF_SPLITS:
        split_file = os.path.join(splits_dir, f"{split}.json")
        if not os.path.isfile(split_file):
            raise UserError(f"FF++ split file not found: {split_file} (the official "
                            "train.json / val.json / test.json)")
        with open(split_file) as fh:
            pairs = json.load(fh)
        entries = []
        for a, b in pairs:
            for vid in (a, b):
                folder = os.path.join(root, "original_sequences", original, compression, "images", vid)
                frames = _frames(folder, root)
                missing += [] if frames else [folder]
                entries += [(p, 0) for p in frames]
            for method in methods:
                for vid in (f"{a}_{b}", f"{b}_{a}"):
                    folder = os.path.join(root, "manipulated_sequences", method, compression,
                                          "images", vid)
                    frames = _frames(folder, root)
                    missing += [] if frames else [folder]
                    entries += [(p, 1) for p in frames]
        save_pickle_index(entries, os.path.join(root, f"{split}_{compression}.pickle"))
        counts[split] = (sum(1 for _, y in entries if y == 0), sum(1 for _, y in entries if y == 1))
    return counts, missing


def build_wilddeepfake(root):
    """``<split>/real.pickle`` and ``fake.pickle`` from ``<split>/{real,fake}/<video>/*``."""
    counts = {}
    for split in ("train", "test"):
        base = os.path.join(root, split)
        if not os.path.isdir(base):
            raise UserError(f"WildDeepfake split folder not found: {base}")
        for kind in ("real", "fake"):
            paths = sorted(os.path.relpath(p, base).replace(os.sep, "/")
                           for p in glob.glob(os.path.join(base, kind, "**", "*"), recursive=True)
                           if p.lower().endswith(IMAGE_EXTS))
            save_pickle_index(paths, os.path.join(base, f"{kind}.pickle"))
            counts[f"{split}/{kind}"] = len(paths)
    return counts


def check_celebdf(root):
    """Celeb-DF needs no index beyond its own testing list: count what the loader will see."""
    counts = {}
    for folder in ("YouTube-real", "Celeb-real", "Celeb-synthesis"):
        counts[folder] = len(glob.glob(os.path.join(root, folder, "images", "*", "*")))
    if not os.path.isfile(os.path.join(root, "List_of_testing_videos.txt")):
        raise UserError(f"{root}/List_of_testing_videos.txt not found (it ships with Celeb-DF v2)")
    return counts


def check_dfdc(root):
    """DFDC needs no index beyond its metadata.json files and test/labels.csv: count them."""
    parts = sorted(glob.glob(os.path.join(root, "dfdc_train_part_*")))
    counts = {"train parts": len(parts),
              "train videos": sum(len(json.load(open(os.path.join(p, "metadata.json"))))
                                  for p in parts if os.path.isfile(os.path.join(p, "metadata.json")))}
    labels = os.path.join(root, "test", "labels.csv")
    counts["test videos"] = max(0, sum(1 for _ in open(labels)) - 1) if os.path.isfile(labels) else 0
    return counts
