"""``tools/benchmark.py data``: the training loader on 320 px PNG face crops (what
tools/extract_faces.py writes), resized to ``size`` with a flip and normalization: uint8 handed
over by the workers and normalised in the main process (as the trainer does) against float handed
over (earlier releases), and the per-image costs in one process."""
import os
import tempfile

import torch

from benchmarks.timing import median_time


def bench_data(size=299, data_batch=32, data_batches=8):
    """Prints the two tables; returns their figures: ``decode_ms``, ``sample_uint8_ms``,
    ``sample_float_ms`` per image, and ``workers<N>_<uint8|float>_images_per_s``."""
    import cv2
    from torch.utils.data import DataLoader

    from dataset import build_dataset, collate
    from dataset.base import read_rgb, to_input
    from dataset.demo import load_sources

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
        branch = {
            "root": tmp,
            "transforms": [{"name": "Resize", "params": {"height": size, "width": size}},
                           {"name": "HorizontalFlip", "params": {"p": 0.5}},
                           {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}],
        }
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

                def run():
                    for batch in loader:
                        to_input(batch, "cpu")
                run()  # warm-up: worker start, file cache
                t = median_time(run, 3, warmup=0)
                figures[f"workers{workers}_{key}_images_per_s"] = round(len(ds) / t)
                print(f"| {workers} | {name} | {len(ds) / t:.0f} | {len(ds) / t / workers:.0f} |")
    # the same loader on real faces with their self-blended images, against plain frames
    from dataset.self_blended import print_loader_rates
    figures["self_blended"] = print_loader_rates(size=size, batch=data_batch,
                                                 batches=data_batches)
    return figures
