"""``tools/benchmark.py shard``: face extraction and scoring spread over processes, the same
commands as one process and under ``torchrun`` with 1 and 2 ranks (gloo, the CPU). Every run is
the whole command in a fresh process (start-up, model loading and the merge included), on inputs
made here: short videos of a real face and face crops of random pixels, scored by a randomly
initialized RECCE; every run's outputs are checked to be those of the one-process run."""
import os
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(tmp, videos, frames, crops):
    import cv2
    import matplotlib.cbook
    import numpy as np

    from model import Recce
    os.makedirs(os.path.join(tmp, "videos"))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.resize(cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR),
                          (180, 210))
    for i in range(videos):  # the face moving over a grey canvas: dlib finds it in every frame
        writer = cv2.VideoWriter(os.path.join(tmp, "videos", f"v{i:03d}.avi"),
                                 cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 400))
        for f in range(frames):
            canvas = np.full((400, 640, 3), 90 + i, np.uint8)
            x, y = 40 + (7 * f + 31 * i) % 400, 60 + (5 * f + 13 * i) % 120
            canvas[y:y + 210, x:x + 180] = face
            writer.write(canvas)
        writer.release()
    os.makedirs(os.path.join(tmp, "crops"))
    rng = np.random.default_rng(0)
    for i in range(crops):
        cv2.imwrite(os.path.join(tmp, "crops", f"{i:05d}.png"),
                    rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
    torch.manual_seed(0)
    ckpt = os.path.join(tmp, "best_model_1.bin")
    torch.save({"step": 1, "model": Recce().eval().state_dict()}, ckpt)
    return ckpt


def _run_command(launcher, script, argv, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(launcher + [os.path.join(ROOT, script)] + argv, cwd=ROOT, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(launcher + [script] + argv)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


# (figure key, printed name, launcher before the script, ranks)
def _launchers(port):
    one = [sys.executable]
    return [("python", "python (1 process)", one, 1),
            ("torchrun1", "torchrun, 1 rank", [sys.executable, "-m", "torch.distributed.run",
                                               "--nproc_per_node=1", f"--master_port={port}"], 1),
            ("torchrun2", "torchrun, 2 ranks", [sys.executable, "-m", "torch.distributed.run",
                                                "--nproc_per_node=2", f"--master_port={port + 1}"],
             2)]


def bench_shard(videos=8, frames=10, crops=64, size=128, batch=2, threads=0):
    """Prints the two tables; returns their figures: ``<extraction|scoring>_<run>_s``,
    ``..._per_s`` and ``..._x`` (against one process) for the runs python, torchrun1,
    torchrun2."""
    threads = threads or torch.get_num_threads()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _inputs(tmp, videos, frames, crops)
        print(f"\n{os.cpu_count()} CPU cores; every run is the whole command (start-up, model "
              "loading, merge included); workers per rank 1, torch threads per process: "
              f"{threads} for one process, {threads} divided among the ranks under torchrun")
        if videos:
            print(f"\nextraction (dlib): {videos} videos x {frames} frames, 640 x 400 px, every "
                  "frame")
            figures.update(_time_ranks(
                29701, "extraction", "tools/extract_faces.py", "frames", videos * frames, threads,
                lambda out: ["--input", os.path.join(tmp, "videos"), "--out", out,
                             "--all", "--workers", "1"],
                lambda ranks, n: os.path.join(tmp, f"faces_{ranks}_{n}"),
                lambda out: os.path.join(out, "manifest.jsonl"), "manifest"))
        if crops:
            print(f"\nscoring (RECCE, {size} px): {crops} face crops, batch {batch}")
            figures.update(_time_ranks(
                29711, "scoring", "inference.py", "crops", crops, threads,
                lambda out: ["-b", ckpt, "-f", os.path.join(tmp, "crops"), "-d", "cpu",
                             "-s", str(size), "--batch_size", str(batch), "--num_workers", "1",
                             "--output", out],
                lambda ranks, n: os.path.join(tmp, f"scores_{ranks}_{n}.csv"),
                lambda out: out, "rows"))
    return figures


def _time_ranks(port, table, script, unit, count, threads, arguments, output, result, what):
    """One table: ``script`` run by each of ``_launchers`` (one process, torchrun with 1 and 2
    ranks), ``arguments(out)`` its flags, its threads divided among the ranks; the file
    ``result(out)`` of every run must be the one-process run's (``what`` names it)."""
    print(f"| run | s | {unit}/s | x python |")
    print("| --- | --- | --- | --- |")
    reference, base, figures = None, None, {}
    for key, name, launcher, ranks in _launchers(port):
        out = output(ranks, len(launcher))
        t = _run_command(launcher, script, arguments(out), max(1, threads // ranks))
        made = open(result(out), "rb").read()
        reference = reference or made
        assert made == reference, f"{name}: other {what} than one process's"
        base = base or t
        figures.update({f"{table}_{key}_s": round(t, 1),
                        f"{table}_{key}_per_s": round(count / t, 1),
                        f"{table}_{key}_x": round(base / t, 2)})
        print(f"| {name} | {t:.1f} | {count / t:.1f} | {base / t:.2f} |", flush=True)
    return figures
