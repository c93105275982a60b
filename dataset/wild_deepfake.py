"""WildDeepfake: ``root/<split>/real.pickle`` and ``fake.pickle``, image paths relative to
``root/<split>``, built from ``<split>/{real,fake}/<video>/<frame>``."""
import os

from errors import UserError

from .base import Item
from .common import check_entries, choice, require_dir, video_of, walk_images
from .index import load_pickle_index, save_pickle_index
from .registry import Layout, register_layout


def read(cfg, rng):
    split = choice(cfg, "split", ("train", "test"))
    base = os.path.join(cfg["root"], split)
    require_dir(base, "WildDeepfake's <split>/real.pickle and fake.pickle")
    lists = {}
    for kind in ("real", "fake"):
        index = os.path.join(base, f"{kind}.pickle")
        lists[kind] = [os.path.join(base, p)
                       for p in check_entries(load_pickle_index(index), index, pairs=False)]
    reals, fakes = lists["real"], lists["fake"]
    num = cfg.get(f"num_image_{split}")
    if num:
        reals = sorted(rng.sample(reals, min(len(reals), int(num) // 3)))
        fakes = sorted(rng.sample(fakes, min(len(fakes), int(num) - int(num) // 3)))
    return [Item(p, 0, video_of(os.path.relpath(p, base))) for p in reals] + \
           [Item(p, 1, video_of(os.path.relpath(p, base))) for p in fakes]


def build_wilddeepfake(root):
    """``<split>/real.pickle`` and ``fake.pickle`` from ``<split>/{real,fake}/<video>/*``. A list
    without any image is not written (an existing index is never replaced by an empty one; its
    count is 0); when all four are empty nothing is written and it is an error."""
    counts, lists = {}, {}
    for split in ("train", "test"):
        base = os.path.join(root, split)
        if not os.path.isdir(base):
            raise UserError(f"WildDeepfake split folder not found: {base}")
        for kind in ("real", "fake"):
            paths = [os.path.relpath(p, base).replace(os.sep, "/")
                     for p in walk_images(os.path.join(base, kind))]
            if paths:
                lists[os.path.join(base, f"{kind}.pickle")] = paths
            counts[f"{split}/{kind}"] = len(paths)
    if not lists:
        raise UserError(f"WildDeepfake: no images under {root}/<split>/<real|fake>/; no index written")
    for path, paths in lists.items():
        save_pickle_index(paths, path)
    return counts


def _add_arguments(p):
    p.add_argument("--root", required=True, help="the folder holding train/ and test/")


def _build(args):
    return [f"{name}.pickle: {n} frames" for name, n in build_wilddeepfake(args.root).items()]


register_layout(Layout("WildDeepfake", read,
                       keys={"num_image_train": "posint?", "num_image_test": "posint?"},
                       index_name="wilddeepfake", add_arguments=_add_arguments, build_index=_build,
                       description="writes <split>/real.pickle and fake.pickle"))
