"""FaceForensics++: ``root/<split>_<compression>.pickle`` = a list of (path relative to root,
label), built from the official ``train.json`` / ``val.json`` / ``test.json`` id pairs."""
import json
import os

from errors import UserError

from .base import Item
from .common import check_entries, choice, images_in, require_dir, video_of
from .index import load_pickle_index, save_pickle_index
from .registry import Layout, register_layout

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FF_SPLITS = ("train", "val", "test")
COMPRESSIONS = ("c0", "c23", "c40")
# FF++'s downloader stores the uncompressed videos of "c0" under a folder named raw/ (its
# --compression raw); the original mapped c0 to that folder too.
FOLDER_OF = {"c0": "raw", "c23": "c23", "c40": "c40"}


def ff_method_of(rel_path):
    parts = rel_path.replace(os.sep, "/").split("/")
    if "manipulated_sequences" in parts:
        return parts[parts.index("manipulated_sequences") + 1]
    return "original"


def read(cfg, rng):
    root = cfg["root"]
    split = choice(cfg, "split", FF_SPLITS)
    comp = choice(cfg, "compression", COMPRESSIONS, "c23")
    method = choice(cfg, "method", ("all",) + FF_METHODS, "all")
    require_dir(root, "the FaceForensics++ face crops with <split>_<compression>.pickle")
    index = index_path(root, split, comp)
    entries = check_entries(load_pickle_index(index), index, pairs=True)
    items = [Item(os.path.join(root, p), int(y), video_of(p), ff_method_of(p)) for p, y in entries]
    if method != "all":
        fakes = [it for it in items if it.method == method]
        reals = [it for it in items if "original_sequences" in it.path.replace(os.sep, "/")]
        reals = rng.sample(reals, min(len(fakes), len(reals)))
        items = sorted(fakes + reals, key=lambda it: it.path)
    return items


def index_path(root, split, compression):
    """``<split>_<compression>.pickle``; for c0 an index named after the folder,
    ``<split>_raw.pickle``, is read when there is no ``<split>_c0.pickle``."""
    path = os.path.join(root, f"{split}_{compression}.pickle")
    alias = os.path.join(root, f"{split}_{FOLDER_OF[compression]}.pickle")
    if not os.path.isfile(path) and alias != path and os.path.isfile(alias):
        return alias
    return path


def _frames(folder, root):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in images_in(folder)]


def build_faceforensics(root, splits_dir, compression="c23", methods=FF_METHODS,
                        original="youtube"):
    """One ``<split>_<compression>.pickle`` per split from the official ``<split>.json`` pairs.
    The frames of compression c0 are read from the ``raw/`` folders (FF++'s own name for it).

    Returns ``({split: (n_real, n_fake)}, missing video folders)``. A missing video folder is
    reported, not fatal (face extraction may have found no face in it). A split without any frame
    gets no index file (an existing one is never replaced by an empty one; its counts are 0, 0);
    when no split has a frame, it is an error and nothing is written.
    """
    require_dir(root, "the FaceForensics++ face crops")
    counts, missing, indexes = {}, [], {}
    for split in FF_SPLITS:
        split_file = os.path.join(splits_dir, f"{split}.json")
        if not os.path.isfile(split_file):
            raise UserError(f"FF++ split file not found: {split_file} (the official "
                            "train.json / val.json / test.json)")
        try:
            with open(split_file, encoding="utf-8") as fh:
                pairs = json.load(fh)
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"FF++ split file {split_file} is not JSON: {exc}") from None
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p)
                for p in pairs):
            raise UserError(f"FF++ split file {split_file}: expected a list of [id, id] pairs")
        entries = []
        for a, b in pairs:
            for vid in (a, b):
                folder = os.path.join(root, "original_sequences", original, FOLDER_OF[compression],
                                      "images", vid)
                frames = _frames(folder, root)
                missing += [] if frames else [folder]
                entries += [(p, 0) for p in frames]
            for method in methods:
                for vid in (f"{a}_{b}", f"{b}_{a}"):
                    folder = os.path.join(root, "manipulated_sequences", method,
                                          FOLDER_OF[compression], "images", vid)
                    frames = _frames(folder, root)
                    missing += [] if frames else [folder]
                    entries += [(p, 1) for p in frames]
        if entries:
            indexes[split] = entries
        counts[split] = (sum(1 for _, y in entries if y == 0), sum(1 for _, y in entries if y == 1))
    if not indexes:
        raise UserError(f"FF++: no face crops found under {root} for compression {compression}; "
                        "no index written")
    for split, entries in indexes.items():
        save_pickle_index(entries, os.path.join(root, f"{split}_{compression}.pickle"))
    return counts, missing


def _add_arguments(p):
    p.add_argument("--root", required=True, help="the folder of face crops")
    p.add_argument("--splits", help="folder with the official train.json, val.json, test.json "
                                    "(default: <root>/splits)")
    p.add_argument("--compression", default="c23", choices=COMPRESSIONS)
    p.add_argument("--methods", nargs="+", default=list(FF_METHODS), choices=FF_METHODS)


def _build(args):
    splits = args.splits or os.path.join(args.root, "splits")
    counts, missing = build_faceforensics(args.root, splits, args.compression, args.methods)
    lines = [f"warning: no frames in {folder}" for folder in missing[:10]]
    if len(missing) > 10:
        lines.append(f"warning: ... and {len(missing) - 10} more empty video folders")
    lines += [f"{split}_{args.compression}.pickle: {real} real, {fake} fake frames"
              for split, (real, fake) in counts.items()]
    return lines


register_layout(Layout(
    "FaceForensics", read,
    keys={"method": ("all",) + FF_METHODS, "compression": COMPRESSIONS},
    index_name="faceforensics", add_arguments=_add_arguments, build_index=_build,
    description="root/<split>_<compression>.pickle: (path, label) pairs"))
