"""``tools/benchmark.py data``: the training loader on 320 px PNG face crops (what
tools/extract_faces.py writes), resized to ``size`` with a flip and normalization: uint8 handed
over by the workers and normalised in the main process (as the trainer does) against float handed
over (earlier releases), and the per-image costs in one process; then the same loader on real
faces with their self-blended images against plain frames (``loader_rates``)."""
import os
import tempfile
import time

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.timing import median_time
from dataset import build_dataset, collate
from dataset import self_blended as sb
from dataset.base import read_rgb, to_input
from dataset.demo import load_sources


def _transforms(size):
    """Resize to ``size``, a flip, normalization: the loaders' work in both tables."""
    return [{"name": "Resize", "params": {"height": size, "width": size}},
            {"name": "HorizontalFlip", "params": {"p": 0.5}},
            {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]


def bench_data(size=299, data_batch=32, data_batches=8):
    """Prints the two tables; returns their figures: ``decode_ms``, ``sample_uint8_ms``,
    ``sample_float_ms`` per image, and ``workers<N>_<uint8|float>_images_per_s``."""
    faces = load_sources()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        n = data_batch * data_batches
        paths = []
        for i in range(n):
            label = "real" if i % 2 == 0 else "fake"
            img = cv2.resize(faces[i % len(faces)], (320, 320), interpolation=cv2.INTER_CUBIC)
            os.makedirs(os.path.join(tmp, label, str(i // 8)), exist_ok=True)
            paths.append(os.path.join(tmp, label, str(i // 8), f"{i}.png"))
            cv2.imwrite(paths[-1], img[:, :, ::-1])
        branch = {"root": tmp, "transforms": _transforms(size)}
        uint8 = build_dataset("ImageList", branch, seed=0, defer_normalize=True)
        floats = build_dataset("ImageList", branch, seed=0)
        per = {"decode": ("decode (read_rgb)", lambda: [read_rgb(p) for p in paths[:64]]),
               "sample_uint8": ("sample, uint8 out", lambda: [uint8[i] for i in range(64)]),
               "sample_float": ("sample, float out", lambda: [floats[i] for i in range(64)])}
        print(f"\nper image, one process: 320 px PNG -> {size} px")
        print("| step | ms |")
        print("| --- | --- |")
        for key, (name, fn) in per.items():
            ms = median_time(fn, 3) / 64 * 1000
            figures[f"{key}_ms"] = round(ms, 2)
            print(f"| {name} | {ms:.2f} |")
        print(f"\ntraining loader: 320 px PNG faces -> {size} px, batch {data_batch}, "
              f"{len(uint8)} images, {torch.get_num_threads()} CPU threads in the main process")
        print("| workers | hand-over | images/s | per worker |")
        print("| --- | --- | --- | --- |")
        for workers in (1, 2):
            for key, name, ds in (("uint8", "uint8 + normalise in main", uint8),
                                  ("float", "float (before)", floats)):
                loader = DataLoader(ds, batch_size=data_batch, shuffle=True,
                                    num_workers=workers, persistent_workers=True,
                                    collate_fn=collate)
                images_of(loader)  # warm-up: worker start, file cache
                t = median_time(lambda: images_of(loader), 3, warmup=0)
                figures[f"workers{workers}_{key}_images_per_s"] = round(len(ds) / t)
                print(f"| {workers} | {name} | {len(ds) / t:.0f} | {len(ds) / t / workers:.0f} |")
    # the same loader on real faces with their self-blended images, against plain frames
    figures["self_blended"] = print_loader_rates(size=size, batch=data_batch,
                                                 batches=data_batches)
    return figures


def images_of(loader):
    """One pass over ``loader`` as the trainer takes its batches; the number of images."""
    seen = 0
    for batch in loader:
        to_input(batch, "cpu")
        seen += len(batch["label"])
    return seen


def loader_rates(size=299, batch=32, batches=4, workers=(0, 1, 2), crop_side=320, repeats=2):
    """Images per second of the training loader (decode, augment, collate, normalise as the
    trainer does) over the same real frames with ``self_blended`` and without, and the
    generator's own milliseconds per pair in one process. Returns rows of dicts."""
    faces = load_sources()
    frames = batch * batches // 2  # real frames: as many images per epoch both ways
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        found = {}
        for i in range(frames):  # the reals, and as many fakes (copies) for the plain source
            img = cv2.resize(faces[i % len(faces)], (crop_side, crop_side),
                             interpolation=cv2.INTER_CUBIC)
            for kind in ("real", "fake"):
                rel = f"{kind}/{i // 8}/{i}.png"
                os.makedirs(os.path.join(tmp, os.path.dirname(rel)), exist_ok=True)
                cv2.imwrite(os.path.join(tmp, rel), img[:, :, ::-1])
            found[f"real/{i // 8}/{i}.png"] = sb.template_landmarks(crop_side)
        sb.write_cache(os.path.join(tmp, sb.DEFAULT_CACHE), found, set(), {"predictor": "template"})
        transforms = _transforms(size)
        plain = build_dataset("ImageList", {"root": tmp, "transforms": transforms}, seed=0,
                              defer_normalize=True)
        sbi = build_dataset("ImageList", {"root": tmp, "transforms": transforms,
                                          "self_blended": True}, seed=0, defer_normalize=True)
        img = read_rgb(plain.items[0].path)
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        for _ in range(20):
            sb.generate(img, sb.template_landmarks(crop_side), rng)
        per_pair = (time.perf_counter() - start) / 20 * 1000
        for n in workers:
            for label, ds in (("without", plain), ("self_blended", sbi)):
                # as the trainer batches them: a pair source takes half as many frames
                loader = DataLoader(ds, batch_size=ds.frames_per_batch(batch), shuffle=True,
                                    num_workers=n, persistent_workers=n > 0, collate_fn=collate)
                images_of(loader)  # warm-up: worker start, file cache
                best = 0.0
                for _ in range(repeats):
                    t = time.perf_counter()
                    best = max(best, images_of(loader) / (time.perf_counter() - t))
                rows.append({"workers": n, "source": label, "images_per_s": best})
    return {"generator_ms_per_pair": per_pair, "size": size, "crop_side": crop_side,
            "batch": batch, "rows": rows, "threads": torch.get_num_threads()}


def print_loader_rates(**kwargs):
    """``loader_rates`` as the Markdown table ``tools/benchmark.py data`` prints."""
    r = loader_rates(**kwargs)
    print(f"\nself-blended images: {r['crop_side']} px PNG faces -> {r['size']} px, batch "
          f"{r['batch']} images (with self_blended: {r['batch'] // 2} reals + their blends); the "
          f"generator alone: {r['generator_ms_per_pair']:.1f} ms per pair in one process")
    print("| workers | source | images/s |")
    print("| --- | --- | --- |")
    for row in r["rows"]:
        print(f"| {row['workers']} | {row['source']} | {row['images_per_s']:.0f} |")
    return r
