"""DeepfakeBench: the preprocessed frames of its datasets, each described by one JSON file
(``<dataset_json_folder>/<dataset>.json``), read as DeepfakeBench's training/dataset/
abstract_dataset.py reads them:

    {dataset: {label_name: {split: {video: {"label": label_name, "frames": [paths]}}}}}

with one more ``{compression: ...}`` level under the split for the FF++ family (FaceForensics++,
FF-DF, FF-F2F, FF-FS, FF-NT, DeepFakeDetection, FaceShifter); a ``_c40`` suffix on those names
(``FF-DF_c40``) reads the same file's c40 entries, as DeepfakeBench does. Labels map to 0 / 1
through ``label_dict`` (DeepfakeBench's own mapping built in; a branch's entries are added to it or
override it).

Frame paths (either slash): ``./datasets/...`` is read under ``root``, the folder that
``./datasets`` stands for; a relative path that does not start with ``.`` under ``rgb_dir``, as
DeepfakeBench reads it (its ``rgb_dir``, by default ``./datasets/rgb``: here ``<root>/rgb``); an
absolute path as it is. With ``lmdb_dir`` the frames come from its LMDB store instead.

A video's frames are first sorted by frame number, as its loader does: the file name up to its
first dot, read as an integer (the name is taken after the last backslash when the video's first
path has one, else after the last slash); equal numbers keep the JSON's order. Then ``frame_num``
frames are chosen when a video has more: ``frame_sampling: first`` takes the first ``frame_num``,
which is what its current code ends up doing (it shortens the total to ``frame_num`` before
computing the step); ``even`` (the default) takes every (total // frame_num)-th frame from the
first and keeps the first ``frame_num`` of those, the step rule of its first release (which took
the JSON's order, unsorted).
"""
import os

from errors import UserError

from .base import Item, import_lmdb, lmdb_path
from .common import choice, read_json
from .registry import Layout, register_layout

# DeepfakeBench's training/config/train_config.yaml, label_dict
DEFAULT_LABELS = {
    "DFD_fake": 1, "DFD_real": 0,
    "FF-SH": 1, "FF-F2F": 1, "FF-DF": 1, "FF-FS": 1, "FF-NT": 1, "FF-FH": 1, "FF-real": 0,
    "CelebDFv1_real": 0, "CelebDFv1_fake": 1, "CelebDFv2_real": 0, "CelebDFv2_fake": 1,
    "DFDCP_Real": 0, "DFDCP_FakeA": 1, "DFDCP_FakeB": 1, "DFDC_Fake": 1, "DFDC_Real": 0,
    "DF_fake": 1, "DF_real": 0, "UADFV_Fake": 1, "UADFV_Real": 0, "roop_Real": 0, "roop_Fake": 1,
}
FF_FAMILY = ("FaceForensics++", "FF-DF", "FF-F2F", "FF-FS", "FF-NT", "DeepFakeDetection",
             "FaceShifter")
SPLITS = ("train", "val", "test")
COMPRESSIONS = ("c23", "c40", "raw")
SAMPLING = ("even", "first")
DEFAULT_FRAME_NUM = 32  # DeepfakeBench's frame_num for train and test


def json_path(cfg):
    return os.path.join(cfg["dataset_json_folder"], f"{cfg['dataset']}.json")


def sort_frames(frames, where="a video"):
    """A video's frames in DeepfakeBench's order (see the module's docstring): sorted by the
    integer before the first dot of the file name; a name without one is an error naming it."""
    frames = [str(f) for f in frames]
    if not frames:
        return frames
    sep = "\\" if "\\" in frames[0] else "/"

    def number(path):
        name = path.split(sep)[-1]
        try:
            return int(name.split(".")[0])
        except ValueError:
            raise UserError(f"{where}: frame {path!r}: DeepfakeBench orders a video's frames by "
                            f"the number its file name starts with; {name!r} has none") from None
    return sorted(frames, key=number)


def sample_frames(frames, frame_num, how="even"):
    """DeepfakeBench's choice of ``frame_num`` frames of a video, from frames already in its
    order (``sort_frames``; see the module's docstring)."""
    total = len(frames)
    if frame_num >= total:
        return list(frames)
    if how == "first":
        return list(frames[:frame_num])
    step = total // frame_num
    return [frames[i] for i in range(0, total, step)][:frame_num]


def default_rgb_dir(root):
    """DeepfakeBench's ``rgb_dir`` default, ``./datasets/rgb``, where ``./datasets`` is ``root``."""
    return os.path.join(root, "rgb")


def frame_path(path, root, rgb_dir=None):
    """A JSON frame path on this machine (either slash): ``./datasets/...`` under ``root``; a
    relative path that does not start with ``.`` under ``rgb_dir`` (default ``<root>/rgb``), as
    DeepfakeBench's loader reads it; an absolute path as it is; another path starting with ``.``
    under ``root`` without its leading dots and slashes."""
    p = path.replace("\\", "/")
    if p.startswith("./datasets/"):
        return os.path.join(root, *p[len("./datasets/"):].split("/"))
    if os.path.isabs(p):
        return p
    if not p.startswith("."):
        return os.path.join(rgb_dir or default_rgb_dir(root), *p.split("/"))
    return os.path.join(root, *p.lstrip("./").split("/"))


def _entries(cfg):
    """(dataset name, compression, the JSON's entries of that dataset)."""
    name = cfg["dataset"]
    comp = choice(cfg, "compression", COMPRESSIONS, "c23")
    base = name
    if name.endswith("_c40") and name[:-4] in FF_FAMILY:
        base, comp = name[:-4], "c40"
    path = json_path(cfg)
    if not os.path.isfile(path):
        raise UserError(f"DeepfakeBench: no {os.path.basename(path)} in dataset_json_folder "
                        f"{cfg['dataset_json_folder']}")
    data = read_json(path, "DeepfakeBench dataset JSON")
    if not isinstance(data, dict) or not isinstance(data.get(base), dict):
        found = ", ".join(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise UserError(f"{path}: no dataset {base!r} at its top level (found: {found})")
    return base, comp, data[base], path


def lmdb_env(cfg, base):
    """DeepfakeBench's store of a dataset: ``<lmdb_dir>/FaceForensics++_lmdb`` for the FF++
    family, ``<lmdb_dir>/<dataset>_lmdb`` otherwise (its abstract_dataset.py)."""
    name = "FaceForensics++" if cfg["dataset"] in FF_FAMILY else cfg["dataset"]
    path = os.path.join(cfg["lmdb_dir"], f"{name}_lmdb")
    if not os.path.isdir(path):
        raise UserError(f"DeepfakeBench: no LMDB store {path} (lmdb_dir)")
    import_lmdb()  # before the lists are read, not in the first worker
    return path


def lmdb_key(path):
    """DeepfakeBench's key of a frame in its LMDB store: the JSON's path with a leading
    ``./datasets\\`` removed (its rule: only a path that starts with a dot, only that prefix)."""
    return path.replace("./datasets\\", "") if path[:1] == "." else path


def read(cfg, rng):
    split = choice(cfg, "split", SPLITS, "test")
    how = choice(cfg, "frame_sampling", SAMPLING, "even")
    frame_num = cfg.get("frame_num", DEFAULT_FRAME_NUM)
    labels = {**DEFAULT_LABELS, **(cfg.get("label_dict") or {})}
    base, comp, entries, path = _entries(cfg)
    root = cfg.get("root")
    rgb_dir = cfg.get("rgb_dir") or (default_rgb_dir(root) if root else None)
    env = lmdb_env(cfg, base) if cfg.get("lmdb_dir") else None
    if env is None and not root:
        raise UserError(f"DeepfakeBench {cfg['dataset']}: the branch needs 'root' (the folder "
                        "./datasets stands for) or 'lmdb_dir'")
    items, missing, first_missing = [], 0, None
    for label_name, by_split in entries.items():
        where = f"{path}: {base}/{label_name}"
        if not isinstance(by_split, dict) or split not in by_split:
            raise UserError(f"{where} has no {split!r} split (it has "
                            f"{', '.join(by_split) if isinstance(by_split, dict) else 'none'})")
        videos = by_split[split]
        if base in FF_FAMILY:
            if not isinstance(videos, dict) or comp not in videos:
                raise UserError(f"{where}/{split} has no compression {comp!r} (it has "
                                f"{', '.join(videos) if isinstance(videos, dict) else 'none'})")
            videos = videos[comp]
        if not isinstance(videos, dict):
            raise UserError(f"{where}/{split}: expected a mapping of videos")
        for video, info in videos.items():
            if not isinstance(info, dict) or not isinstance(info.get("frames"), list):
                raise UserError(f"{where}/{split}: video {video!r} has no frames list")
            bad = [f for f in info["frames"] if not isinstance(f, str) or not f]
            if bad:
                raise UserError(f"{where}/{split}: video {video!r}: frames: expected frame paths "
                                f"(text), got {bad[0]!r}")
            lbl = info.get("label")
            if not isinstance(lbl, str):
                raise UserError(f"{where}/{split}: video {video!r}: label: expected a label name "
                                f"(text), got {lbl!r}")
            if lbl not in labels:
                raise UserError(f"{where}/{split}: video {video!r} has the label {lbl!r}, which "
                                "label_dict does not map to 0 or 1 (add it to the branch's "
                                "label_dict)")
            frames = sort_frames(info["frames"], f"{where}/{split}: video {video!r}")
            for f in sample_frames(frames, frame_num, how):
                if env is not None:  # read from the store when the sample is loaded
                    items.append(Item(lmdb_path(env, lmdb_key(f)), int(labels[lbl]),
                                      f"{lbl}_{video}", lbl))
                    continue
                p = frame_path(f, root, rgb_dir)
                if not os.path.isfile(p):
                    missing += 1
                    first_missing = first_missing or p
                    continue
                items.append(Item(p, int(labels[lbl]), f"{lbl}_{video}", lbl))
    if missing and not items:
        raise UserError(f"{path}: none of the frames it names is under root {root} or rgb_dir "
                        f"{rgb_dir} (first: {first_missing}); root is the folder that ./datasets "
                        "stands for, rgb_dir the folder of the paths that do not start with '.'")
    if missing:
        import logging
        logging.getLogger("recce").warning(
            "%s: %d frame(s) named by %s are missing under %s (first: %s); skipped", base,
            missing, os.path.basename(path), root, first_missing)
    return items


KEYS = {"dataset_json_folder": "name", "dataset": "name", "compression": COMPRESSIONS,
        "frame_num": "posint", "label_dict": "label_map", "frame_sampling": SAMPLING,
        "lmdb_dir": "name", "rgb_dir": "name"}

register_layout(Layout("DeepfakeBench", read, keys=KEYS, needs_root=False,
                       description="DeepfakeBench's preprocessed frames and dataset JSON files"))
