"""DFDC: train = ``root/dfdc_train_part_*/metadata.json`` with ``images/<video>/*`` beside it;
test = ``root/test/labels.csv`` (``<video>.mp4,<0|1>``) with ``root/test/images/<video>/*``."""
import csv
import os

from errors import UserError

from .base import Item
from .common import choice, images_in, read_json, read_lines, require_dir
from .registry import Layout, register_layout


def _parts(root):
    parts = sorted(os.path.join(root, d) for d in os.listdir(root)
                   if d.startswith("dfdc_train_part_") and os.path.isdir(os.path.join(root, d)))
    if not parts:
        raise UserError(f"no dfdc_train_part_* folder in {root}")
    return parts


def read_metadata(path):
    if not os.path.isfile(path):
        raise UserError(f"DFDC metadata not found: {path}")
    meta = read_json(path, "DFDC metadata")
    if not isinstance(meta, dict):
        raise UserError(f"DFDC metadata {path}: expected a mapping of video names, "
                        f"got a {type(meta).__name__}")
    for name, info in meta.items():
        if not isinstance(info, dict) or info.get("label") not in ("REAL", "FAKE"):
            raise UserError(f"DFDC metadata {path}: entry {name!r} has no label REAL or FAKE")
    return meta


def read_test_labels(path):
    """``[(video, label)]`` from ``labels.csv``; a header line is allowed."""
    if not os.path.isfile(path):
        raise UserError(f"DFDC test labels not found: {path}")
    out = []
    for n, row in enumerate(csv.reader(read_lines(path)), 1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2 or row[1].strip() not in ("0", "1"):
            if n == 1:
                continue  # a header line
            raise UserError(f"{path}:{n}: expected '<video>.mp4,<0|1>', got {','.join(row)!r}")
        out.append((os.path.splitext(row[0].strip())[0], int(row[1])))
    return out


def read(cfg, rng):
    root = cfg["root"]
    split = choice(cfg, "split", ("train", "test"))
    require_dir(root, "DFDC's dfdc_train_part_* folders and test/")
    labelled = []  # (images folder of the video, label, video id)
    if split == "train":
        for part in _parts(root):
            meta = read_metadata(os.path.join(part, "metadata.json"))
            for name, info in sorted(meta.items()):
                video = os.path.splitext(name)[0]
                labelled.append((os.path.join(part, "images", video),
                                 1 if info["label"] == "FAKE" else 0, video))
    else:
        for video, label in read_test_labels(os.path.join(root, "test", "labels.csv")):
            labelled.append((os.path.join(root, "test", "images", video), label, video))
    return [Item(p, label, video) for vdir, label, video in labelled for p in images_in(vdir)]


def check_dfdc(root):
    """DFDC needs no index beyond its metadata.json files and test/labels.csv: count them."""
    require_dir(root, "DFDC's dfdc_train_part_* folders and test/")
    parts = _parts(root)
    videos = sum(len(read_metadata(os.path.join(p, "metadata.json"))) for p in parts)
    counts = {"train parts": len(parts), "train videos": videos}
    labels = os.path.join(root, "test", "labels.csv")
    counts["test videos"] = len(read_test_labels(labels)) if os.path.isfile(labels) else 0
    return counts


def labels_from_metadata(metadata, root):
    """``root/test/labels.csv`` (``<video>.mp4,<0|1>``, 1 = fake) from a metadata.json of the
    training parts' form (``{"<video>.mp4": {"label": "REAL" | "FAKE"}}``). An existing labels.csv
    is never replaced: one with the same content is kept, another is an error. ``root`` must
    exist: a mistyped one is an error, never a new folder."""
    require_dir(root, "DFDC's dfdc_train_part_* folders and test/")
    meta = read_metadata(metadata)
    text = "filename,label\n" + "".join(f"{name},{1 if info['label'] == 'FAKE' else 0}\n"
                                        for name, info in sorted(meta.items()))
    path = os.path.join(root, "test", "labels.csv")
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            if fh.read() == text:
                return path, len(meta)
        raise UserError(f"{path} exists with other content; it is not replaced (move it away "
                        "to write a new one)")
    from fileio import atomic_write_text
    os.makedirs(os.path.dirname(path), exist_ok=True)
    atomic_write_text(path, text)
    return path, len(meta)


def _add_arguments(p):
    p.add_argument("--root", required=True, help="the DFDC folder")
    p.add_argument("--test_metadata", metavar="JSON",
                   help="write <root>/test/labels.csv from the test videos' metadata.json "
                        "(REAL/FAKE labels) first")


def _build(args):
    lines = []
    if args.test_metadata:
        check_dfdc(args.root)  # the layout first: a run that fails writes nothing
        path, n = labels_from_metadata(args.test_metadata, args.root)
        lines.append(f"{path}: {n} test videos")
    return lines + [f"{name}: {n}" for name, n in check_dfdc(args.root).items()]


register_layout(Layout("DFDC", read, index_name="dfdc", add_arguments=_add_arguments,
                       build_index=_build, description="checks the layout and counts"))
