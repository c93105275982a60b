"""Self-blended images (dataset/self_blended.py): landmarks for the real frames, and a look at what
the generator makes.

    python tools/self_blended.py prepare --config config/paper/sbi_recce.yml
    python tools/self_blended.py prepare --config config/demo_sbi.yml
    python tools/self_blended.py figure --config config/demo_sbi.yml --out sbi.png

``prepare`` finds the landmarks of every real frame of the config's ``self_blended`` branches
once, with dlib's frontal detector and shape predictor (the 68-point stand-in of faces/landmarks.py,
or ``--predictor FILE``, e.g. DeepfakeBench's 81-point file), and writes them into the branch's
landmark cache (``self_blended_landmarks``, by default ``<root>/self_blended_landmarks.npz``),
atomically and every few hundred frames, so an interrupted run goes on where it stopped. Frames
whose landmarks the crop manifest already stored (DeepfakeBench's ``landmarks/`` files) are not
recomputed. A frame where no face is found is recorded as such: training leaves it out and counts
it. ``--fallback crop`` takes, where the detector finds no face, the face box that this project's
crops imply (the middle 1/1.3 of the crop: for crops of tools/extract_faces.py's box rules).

``figure`` draws real / mask / self-blended triplets of a branch's frames into a PNG.
"""
import argparse
import logging
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

from dataset import build_dataset
from dataset.base import BadImageError, read_rgb
from dataset.self_blended import (
    beside,
    cache_path,
    check_points,
    frame_key,
    generate,
    generator,
    read_cache,
    write_cache,
)
from errors import UserError, flags, run_cli
from faces.crop import MARGIN
from trainer.config import load_config, split_overrides

log = logging.getLogger("recce")
SAVE_EVERY = 500  # frames between two writes of the cache


def sbi_branches(cfg, names):
    """The branches to work on: ``names``, else every branch with ``self_blended: true``."""
    if names:
        for name in names:
            if name not in cfg["dataset"]:
                raise UserError(f"branch {name}: {cfg['data']['file']} has no such branch (it has "
                                f"{', '.join(cfg['dataset'])})", arg="branch")
        return list(names)
    found = [n for n, b in cfg["dataset"].items() if isinstance(b, dict) and b.get("self_blended")]
    if not found:
        raise UserError(f"{cfg['data']['file']}: no branch says self_blended: true (name one with "
                        "--branch)")
    return found


def real_frames(cfg, name):
    """The real items of a branch, as its layout reads them."""
    branch = {**cfg["dataset"][name], "self_blended": False}
    return [it for it in build_dataset(cfg["data"]["name"], branch).items if it.label == 0]


def crop_face_box(shape, margin=MARGIN):
    """The face box a crop of ``margin`` times the face's side implies: its middle square."""
    h, w = shape[:2]
    side = min(h, w) / margin
    cx, cy = w / 2, h / 2
    return (int(round(cx - side / 2)), int(round(cy - side / 2)),
            int(round(cx + side / 2)), int(round(cy + side / 2)))


def prepare(cfg, names, predictor=None, fallback="none", redo=False):
    """Landmarks of every real frame of the branches into their caches; returns summary lines."""
    from faces.landmarks import Landmarker
    jobs = {}  # cache file -> (root, [items])
    for name in names:
        branch = cfg["dataset"][name]
        where = cache_path(branch)
        if where is None:
            raise UserError(f"{name}.self_blended_landmarks: the branch has no root to keep its "
                            "landmark cache in: name the file")
        root, items = jobs.setdefault(where, (branch.get("root"), []))
        items += real_frames(cfg, name)
    marker = Landmarker(predictor, where="predictor")
    lines = []
    for where, (root, items) in jobs.items():
        found, missing, meta = read_cache(where)  # a file that is not a cache: refused
        if redo:
            found, missing, meta = {}, set(), {}
        made_by = {"predictor": marker.describe(), "fallback": fallback}
        if meta and {k: meta.get(k) for k in made_by} != made_by:
            raise UserError(f"{where} holds landmarks of other settings ({meta.get('predictor')}, "
                            f"fallback {meta.get('fallback')}): --redo replaces them, or name "
                            "another file in self_blended_landmarks")
        todo, seen = [], set()
        for it in items:
            key = frame_key(it.path, root)
            npy = beside(it.path)
            if key in seen or key in found or key in missing or (npy and os.path.isfile(npy)):
                continue
            seen.add(key)
            todo.append((key, it.path))
        start, new, faceless, unreadable = time.monotonic(), 0, 0, 0
        for n, (key, path) in enumerate(todo, 1):
            try:
                image = read_rgb(path)
            except BadImageError as exc:
                log.warning("%s", exc)
                unreadable += 1
                continue
            box = crop_face_box(image.shape) if fallback == "crop" else None
            points = marker.face_points(image, box)
            if points is None:
                missing.add(key)
                faceless += 1
            else:
                found[key] = check_points(points, f"predictor {marker.path}")
                new += 1
            if n % SAVE_EVERY == 0 or n == len(todo):
                write_cache(where, found, missing, made_by)
                log.info("%s: %d of %d frames, %.0f frames/s", where, n, len(todo),
                         n / max(time.monotonic() - start, 1e-9))
        if not todo and not os.path.isfile(where):
            lines.append(f"{where}: not written (every frame has its landmarks beside it)")
            continue
        lines.append(f"{where}: {len(found):,} frames with landmarks ({new:,} new), "
                     f"{len(missing):,} without a face ({faceless:,} new), {unreadable:,} "
                     "unreadable; "
                     f"{len(items) - len(todo):,} of the {len(items):,} real frames were done "
                     "already or have DeepfakeBench landmark files")
    return lines


def figure(cfg, name, out, pairs=4, seed=0):
    """Real / mask / self-blended triplets of ``pairs`` frames of branch ``name``, as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt

    from fileio import atomic_write_figure
    ds = build_dataset(cfg["data"]["name"], {**cfg["dataset"][name], "self_blended": True},
                       seed=seed)
    picks = np.linspace(0, len(ds) - 1, pairs).round().astype(int)
    fig, axes = plt.subplots(pairs, 3, figsize=(4.2, 1.45 * pairs), squeeze=False, dpi=80)
    for row, i in enumerate(picks):
        img = read_rgb(ds.items[2 * i].path)
        real, fake, mask = generate(img, ds.points[i], generator(seed, 0, int(i)), ds.crop,
                                    ds.settings)
        shown = real.copy()
        if ds.crop == "frame":  # the landmarks' hull on the real frame
            hull = cv2.convexHull(np.round(ds.points[i]).astype(np.int32))
            cv2.polylines(shown, [hull], True, (255, 255, 0), 1)
        for col, (picture, title) in enumerate(((shown, "real (hull)"),
                                                (mask, f"mask (peak {mask.max():.2f})"),
                                                (fake, "self-blended"))):
            ax = axes[row, col]
            ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    atomic_write_figure(out, fig)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for command, text in (("prepare", "landmarks of the real frames into the branch's cache"),
                          ("figure", "real / mask / self-blended triplets as a PNG")):
        sp = sub.add_parser(command, help=text)
        sp.add_argument("--config", required=True, help="a model config whose dataset file has a "
                                                        "self_blended branch")
        sp.add_argument("--opt", action="append", default=[],
                        help="key.path=value overrides, as train.py takes them")
        sp.add_argument("--branch", nargs="+", default=None,
                        help="dataset branches (default: every self_blended one)")
    prep = sub.choices["prepare"]
    prep.add_argument("--predictor", default=None,
                      help="a dlib shape predictor .dat (default: the 68-point stand-in)")
    prep.add_argument("--fallback", choices=["none", "crop"], default="none",
                      help="where no face is found: none (the frame is left out) or crop (the "
                           "face box a 1.3 x crop implies)")
    prep.add_argument("--redo", action="store_true", help="find every frame's landmarks again")
    fig = sub.choices["figure"]
    fig.add_argument("--out", default="docs/self_blended_demo.png", help="the PNG to write")
    fig.add_argument("--pairs", type=int, default=4, help="frames shown")
    fig.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S")

    def body():
        with flags(predictor="--predictor", branch="--branch"):
            model_opts, dataset_opts = split_overrides(args.opt)
            cfg = load_config(args.config, model_opts, dataset_opts)
            names = sbi_branches(cfg, args.branch)
            if args.command == "prepare":
                for line in prepare(cfg, names, args.predictor, args.fallback, args.redo):
                    print(line)
            else:
                if args.pairs < 1:
                    raise UserError(f"--pairs {args.pairs}: expected at least 1")
                print(figure(cfg, names[0], args.out, args.pairs, args.seed))
        return 0
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
