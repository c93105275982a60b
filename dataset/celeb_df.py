"""Celeb-DF v2: ``root/{YouTube-real,Celeb-real,Celeb-synthesis}/images/<video>/*`` and
``List_of_testing_videos.txt`` (test = the listed videos, train = the rest; labels by folder)."""
import os

from errors import UserError

from .base import Item
from .common import choice, images_in, read_lines, require_dir, subfolders
from .registry import Layout, register_layout

FOLDERS = (("YouTube-real", 0), ("Celeb-real", 0), ("Celeb-synthesis", 1))


def testing_videos(root):
    """``<folder>/<video>`` of every line ``<celeb-df label> <folder>/<video>.mp4`` of the list."""
    list_file = os.path.join(root, "List_of_testing_videos.txt")
    if not os.path.isfile(list_file):
        raise UserError(f"Celeb-DF testing list not found: {list_file} (it ships with Celeb-DF v2)")
    videos = set()
    for n, line in enumerate(read_lines(list_file), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise UserError(f"{list_file}:{n}: expected '<label> <folder>/<video>.mp4', "
                            f"got {line.strip()!r}")
        videos.add(os.path.splitext(parts[1])[0])
    return videos


def read(cfg, rng):
    root = cfg["root"]
    split = choice(cfg, "split", ("train", "test"))
    require_dir(root, "Celeb-DF's YouTube-real, Celeb-real and Celeb-synthesis folders")
    test_videos = testing_videos(root)
    reals, fakes = [], []
    for folder, label in FOLDERS:
        for vdir in subfolders(os.path.join(root, folder, "images")):
            video = f"{folder}/{os.path.basename(vdir)}"
            if (video in test_videos) != (split == "test"):
                continue
            for p in images_in(vdir):
                (fakes if label else reals).append(Item(p, label, video))
    if cfg.get("balance", False) and len(fakes) > len(reals):
        fakes = sorted(rng.sample(fakes, len(reals)), key=lambda it: it.path)
    return reals + fakes


def check_celebdf(root):
    """Celeb-DF needs no index beyond its own testing list: count what the loader will see."""
    require_dir(root, "Celeb-DF's YouTube-real, Celeb-real and Celeb-synthesis folders")
    testing_videos(root)
    return {folder: sum(len(images_in(v)) for v in subfolders(os.path.join(root, folder, "images")))
            for folder, _ in FOLDERS}


def _add_arguments(p):
    p.add_argument("--root", required=True, help="the Celeb-DF v2 folder")


def _build(args):
    return [f"{name}: {n}" for name, n in check_celebdf(args.root).items()]


register_layout(Layout("CelebDF", read, keys={"balance": "bool"}, index_name="celebdf",
                       add_arguments=_add_arguments, build_index=_build,
                       description="checks the layout and counts (no index to write)"))
