"""Anyone's data: ``index`` (a CSV with header ``path,label[,video][,method]`` or JSON lines with
those keys; relative paths are relative to the index file) or ``root`` with ``real/`` and
``fake/`` folders (sub-folders = videos)."""
import os

from errors import UserError

from .base import Item
from .common import require_dir, video_of, walk_images
from .index import read_table_index
from .registry import Layout, register_layout


def read(cfg, rng):
    if cfg.get("index"):
        index = cfg["index"]
        base = os.path.dirname(os.path.abspath(index))
        items = []
        for row in read_table_index(index):
            path = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
            items.append(Item(path, row["label"], str(row.get("video") or video_of(path)),
                              str(row.get("method") or "")))
        return items
    root = cfg.get("root")
    if not root:
        raise UserError("ImageList needs either 'index' (a CSV/JSON-lines file) or 'root'")
    require_dir(root, "the folders real/ and fake/")
    items = []
    for sub, label in (("real", 0), ("fake", 1)):
        folder = os.path.join(root, sub)
        require_dir(folder, f"images of label {label} under {sub}/")
        items += [Item(p, label, os.path.relpath(os.path.dirname(p), root))
                  for p in walk_images(folder)]
    return items


register_layout(Layout("ImageList", read, keys={"index": "name"}, needs_root=False,
                       description="a CSV / JSON-lines index, or real/ and fake/ folders"))
