"""``tools/benchmark.py inference``: inference.py's streaming path against the original's way
(preload every image of the folder as a tensor, then score one at a time on the main thread).

Each measurement runs in a fresh process, so that peak memory (max RSS of the process plus its
largest worker) belongs to it alone.
"""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, os, resource, sys, time, io, contextlib
sys.path.insert(0, {root!r})
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
import torch
torch.set_num_threads({threads})
mode, folder, ckpt, size, batch, workers = {args!r}
start = time.perf_counter()
if mode == "streaming":
    import inference
    argv = ["-b", ckpt, "-f", folder, "-d", "cpu", "-s", str(size), "--batch_size", str(batch),
            "--num_workers", str(workers)]
    with contextlib.redirect_stdout(io.StringIO()):
        inference.main(argv)
else:  # the original: every image preloaded as a tensor, then one forward per image
    import albumentations as A
    import cv2
    from albumentations.pytorch import ToTensorV2
    from model.checkpoint import load_detector
    model = load_detector(ckpt, "cpu", name="Recce")
    model.channels_last = False
    model = model.to(memory_format=torch.contiguous_format)
    tf = A.Compose([A.Resize(size, size), A.Normalize(mean=(0.5,) * 3, std=(0.5,) * 3),
                    ToTensorV2()])
    names = sorted(os.listdir(folder))
    images = [tf(image=cv2.cvtColor(cv2.imread(os.path.join(folder, n)),
                                    cv2.COLOR_BGR2RGB))["image"] for n in names]
    with torch.no_grad():
        for x in images:
            torch.sigmoid(model(x[None]))
elapsed = time.perf_counter() - start
peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        + resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({{"seconds": elapsed, "peak_mb": peak / 1024}}))
"""


def _make_folder(path, n, side=320):
    import cv2
    import numpy as np
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (side, side, 3), dtype=np.uint8)
    for i in range(n):
        img = np.roll(base, i, axis=1)
        cv2.imwrite(os.path.join(path, f"{i:05d}.jpg"), img)


def _run(mode, folder, ckpt, size, batch, workers, threads):
    code = CHILD.format(root=ROOT, threads=threads,
                        args=(mode, folder, ckpt, size, batch, workers))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_inference(images=(50, 1000), size=299, batch=2, workers=2):
    """Prints the table; returns its figures: ``<way>_<n>_images_per_s`` and ``<way>_<n>_peak_mb``
    for the ways preload (the original's) and streaming (inference.py) and each folder size n,
    ``<way>_memory_growth`` (peak memory of the larger folder over the smaller's) and
    ``streaming_over_preload`` (speed at the larger folder)."""
    import torch

    from model import Recce
    threads = torch.get_num_threads()
    small, large = images
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "model.bin")
        torch.manual_seed(0)
        torch.save({"model": Recce().state_dict()}, ckpt)
        folders = {}
        for n in (small, large):
            folders[n] = os.path.join(tmp, f"images{n}")
            _make_folder(folders[n], n)
        rows = []
        for mode, b, w in (("preload", 1, 0), ("streaming", batch, workers)):
            for n in (small, large):
                r = _run(mode, folders[n], ckpt, size, b, w, threads)
                rows.append((mode, b, w, n, n / r["seconds"], r["peak_mb"]))
    print(f"\ninference, {size} px, CPU, {threads} threads")
    print("| way | batch | workers | images | images/s | peak memory (MB) |")
    print("| --- | --- | --- | --- | --- | --- |")
    figures = {}
    for mode, b, w, n, ips, mb in rows:
        name = ("original (preload, one at a time)" if mode == "preload"
                else "inference.py (streaming)")
        figures.update({f"{mode}_{n}_images_per_s": round(ips, 2),
                        f"{mode}_{n}_peak_mb": round(mb)})
        print(f"| {name} | {b} | {w} | {n} | {ips:.2f} | {mb:.0f} |")
    by = {(r[0], r[3]): r for r in rows}
    growth = {mode: by[(mode, large)][5] / by[(mode, small)][5]
              for mode in ("preload", "streaming")}
    speed = by[("streaming", large)][4] / by[("preload", large)][4]
    figures.update(preload_memory_growth=round(growth["preload"], 2),
                   streaming_memory_growth=round(growth["streaming"], 2),
                   streaming_over_preload=round(speed, 2))
    print(f"\npeak memory {large} vs {small} images: original {growth['preload']:.2f}x, "
          f"streaming {growth['streaming']:.2f}x; speed streaming / original at {large}: "
          f"{speed:.2f}x")
    return figures
