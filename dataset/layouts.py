"""The on-disk layouts of SPEC section 5, each turned into a list of ``Item``s.

Sampling (method subsets, balance, num_image) uses a generator seeded from ``config.seed`` only.
"""
import csv
import glob
import json
import os
import random

from errors import UserError

from .base import Item
from .index import load_pickle_index, read_table_index

FF_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")
FF_SPLITS = ("train", "val", "test")
COMPRESSIONS = ("c0", "c23", "c40")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def _require_dir(path, what):
    if not os.path.isdir(path):
        raise UserError(f"dataset root not found: {path} (expected {what})")


def _choice(cfg, key, allowed, default=None):
    value = cfg.get(key, default)
    if value not in allowed:
        raise UserError(f"{key}: {value!r} is not one of {list(allowed)}")
    return value


def _video_of(rel_path):
    return os.path.dirname(rel_path).replace(os.sep, "/")


def ff_method_of(rel_path):
    parts = rel_path.replace(os.sep, "/").split("/")
    if "manipulated_sequences" in parts:
        return parts[parts.index("manipulated_sequences") + 1]
    return "original"


def faceforensics(cfg, rng):
    """``root/<split>_<compression>.pickle``: a list of (path relative to root, label)."""
    root = cfg["root"]
    split = _choice(cfg, "split", FF_SPLITS)
    comp = _choice(cfg, "compression", COMPRESSIONS, "c23")
    method = _choice(cfg, "method", ("all",) + FF_METHODS, "all")
    _require_dir(root, "the FaceForensics++ face crops with <split>_<compression>.pickle")
    entries = load_pickle_index(os.path.join(root, f"{split}_{comp}.pickle"))
    items = [Item(os.path.join(root, p), int(y), _video_of(p), ff_method_of(p)) for p, y in entries]
    if method != "all":
        fakes = [it for it in items if it.method == method]
        reals = [it for it in items if "original_sequences" in it.path.replace(os.sep, "/")]
        reals = rng.sample(reals, min(len(fakes), len(reals)))
        items = sorted(fakes + reals, key=lambda it: it.path)
    return items


def _images_in(folder):
    return sorted(p for p in glob.glob(os.path.join(folder, "*")) if p.lower().endswith(IMAGE_EXTS))


def celeb_df(cfg, rng):
    """``root/{YouTube-real,Celeb-real,Celeb-synthesis}/images/<video>/*`` + the testing list."""
    root = cfg["root"]
    split = _choice(cfg, "split", ("train", "test"))
    _require_dir(root, "Celeb-DF's YouTube-real, Celeb-real and Celeb-synthesis folders")
    list_file = os.path.join(root, "List_of_testing_videos.txt")
    if not os.path.isfile(list_file):
        raise UserError(f"Celeb-DF testing list not found: {list_file}")
    with open(list_file) as fh:  # "<celeb-df label> <folder>/<video>.mp4"; labelled by folder here
        test_videos = {os.path.splitext(line.split()[1])[0] for line in fh if line.strip()}
    reals, fakes = [], []
    for folder, label in (("YouTube-real", 0), ("Celeb-real", 0), ("Celeb-synthesis", 1)):
        for vdir in sorted(glob.glob(os.path.join(root, folder, "images", "*"))):
            video = f"{folder}/{os.path.basename(vdir)}"
            if (video in test_videos) != (split == "test"):
                continue
            for p in _images_in(vdir):
                (fakes if label else reals).append(Item(p, label, video))
    if cfg.get("balance", False) and len(fakes) > len(reals):
        fakes = sorted(rng.sample(fakes, len(reals)), key=lambda it: it.path)
    return reals + fakes


def wild_deepfake(cfg, rng):
    """``root/<split>/real.pickle`` and ``fake.pickle``: image paths relative to root/<split>."""
    split = _choice(cfg, "split", ("train", "test"))
    base = os.path.join(cfg["root"], split)
    _require_dir(base, "WildDeepfake's <split>/real.pickle and fake.pickle")
    reals = [os.path.join(base, p) for p in load_pickle_index(os.path.join(base, "real.pickle"))]
    fakes = [os.path.join(base, p) for p in load_pickle_index(os.path.join(base, "fake.pickle"))]
    num = cfg.get(f"num_image_{split}")
    if num:
        reals = sorted(rng.sample(reals, min(len(reals), int(num) // 3)))
        fakes = sorted(rng.sample(fakes, min(len(fakes), int(num) - int(num) // 3)))
    return [Item(p, 0, _video_of(os.path.relpath(p, base))) for p in reals] + \
           [Item(p, 1, _video_of(os.path.relpath(p, base))) for p in fakes]


def dfdc(cfg, rng):
    """train: ``root/dfdc_train_part_*/metadata.json`` + images; test: ``root/test/labels.csv``."""
    root = cfg["root"]
    split = _choice(cfg, "split", ("train", "test"))
    _require_dir(root, "DFDC's dfdc_train_part_* folders and test/")
    labelled = []  # (images folder of the video, label, video id)
    if split == "train":
        parts = sorted(glob.glob(os.path.join(root, "dfdc_train_part_*")))
        if not parts:
            raise UserError(f"no dfdc_train_part_* folder in {root}")
        for part in parts:
            meta_path = os.path.join(part, "metadata.json")
            if not os.path.isfile(meta_path):
                raise UserError(f"DFDC metadata not found: {meta_path}")
            with open(meta_path) as fh:
                meta = json.load(fh)
            for name, info in sorted(meta.items()):
                video = os.path.splitext(name)[0]
                labelled.append((os.path.join(part, "images", video),
                                 1 if info.get("label") == "FAKE" else 0, video))
    else:
        labels = os.path.join(root, "test", "labels.csv")
        if not os.path.isfile(labels):
            raise UserError(f"DFDC test labels not found: {labels}")
        with open(labels, newline="") as fh:
            for row in csv.reader(fh):
                if len(row) < 2 or not row[1].strip().isdigit():
                    continue  # a header line
                video = os.path.splitext(row[0].strip())[0]
                labelled.append((os.path.join(root, "test", "images", video), int(row[1]), video))
    return [Item(p, label, video) for vdir, label, video in labelled for p in _images_in(vdir)]


def image_list(cfg, rng):
    """Anyone's data: ``index`` (CSV or JSON lines, SPEC section 5) or ``root`` with real/ fake/."""
    if cfg.get("index"):
        index = cfg["index"]
        base = os.path.dirname(os.path.abspath(index))
        items = []
        for row in read_table_index(index):
            path = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
            items.append(Item(path, row["label"], str(row.get("video") or _video_of(path)),
                              str(row.get("method") or "")))
        return items
    root = cfg.get("root")
    if not root:
        raise UserError("ImageList needs either 'index' (a CSV/JSON-lines file) or 'root'")
    _require_dir(root, "the folders real/ and fake/")
    items = []
    for sub, label in (("real", 0), ("fake", 1)):
        folder = os.path.join(root, sub)
        _require_dir(folder, f"images of label {label} under {sub}/")
        for dirpath, _, files in sorted(os.walk(folder)):
            for f in sorted(files):
                if f.lower().endswith(IMAGE_EXTS):
                    p = os.path.join(dirpath, f)
                    items.append(Item(p, label, os.path.relpath(dirpath, root)))
    return items


LAYOUTS = {
    "FaceForensics": faceforensics,
    "CelebDF": celeb_df,
    "WildDeepfake": wild_deepfake,
    "DFDC": dfdc,
    "ImageList": image_list,
}


def make_rng(seed):
    return random.Random(seed)
