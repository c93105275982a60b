"""``tools/benchmark.py shard``: face extraction and scoring spread over processes, the same
commands run as one process and under ``torchrun`` with 1 and 2 ranks (gloo, the CPU).

Every run is the whole command in a fresh process (start-up, model loading and the merge
included), on inputs made here: short videos of a real face (dlib finds it in every frame) and
face crops of random pixels, scored by a randomly initialized RECCE. The outputs of every run are
checked to be those of the one-process run.
"""
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _inputs(tmp, videos, frames, crops):
    import cv2
    import numpy as np
    import torch
    sys.path.insert(0, ROOT)
    from model import Recce
    from tools.bench_video import _make_video
    os.makedirs(os.path.join(tmp, "videos"))
    for i in range(videos):
        _make_video(os.path.join(tmp, "videos", f"v{i:03d}.avi"), frames)
    os.makedirs(os.path.join(tmp, "crops"))
    rng = np.random.default_rng(0)
    for i in range(crops):
        cv2.imwrite(os.path.join(tmp, "crops", f"{i:05d}.png"),
                    rng.integers(0, 255, (160, 160, 3), dtype=np.uint8))
    torch.manual_seed(0)
    ckpt = os.path.join(tmp, "best_model_1.bin")
    torch.save({"step": 1, "model": Recce().eval().state_dict()}, ckpt)
    return ckpt


def _run(launcher, script, argv, threads):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_ALBUMENTATIONS_UPDATE": "1"}
    start = time.perf_counter()
    proc = subprocess.run(launcher + [os.path.join(ROOT, script)] + argv, cwd=ROOT, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(launcher + [script] + argv)} failed:\n{proc.stderr[-2000:]}")
    return elapsed


def _launchers(port):
    one = [sys.executable]
    return [("python (1 process)", one, 1),
            ("torchrun, 1 rank", [sys.executable, "-m", "torch.distributed.run",
                                  "--nproc_per_node=1", f"--master_port={port}"], 1),
            ("torchrun, 2 ranks", [sys.executable, "-m", "torch.distributed.run",
                                   "--nproc_per_node=2", f"--master_port={port + 1}"], 2)]


def bench_shard(args):
    import torch
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _inputs(tmp, args.shard_videos, args.shard_frames, args.shard_crops)
        frames = args.shard_videos * args.shard_frames
        print(f"\n{os.cpu_count()} CPU cores; every run is the whole command (start-up, model "
              "loading, merge included); workers per rank 1, torch threads per process: "
              f"{threads} for one process, {threads} divided among the ranks under torchrun")
        if args.shard_videos:
            print(f"\nextraction (dlib): {args.shard_videos} videos x {args.shard_frames} "
                  "frames, 640 x 400 px, every frame")
            print("| run | s | frames/s | x python |")
            print("| --- | --- | --- | --- |")
        reference, base = None, None
        for name, launcher, ranks in _launchers(29701) if args.shard_videos else ():
            out = os.path.join(tmp, f"faces_{ranks}_{len(launcher)}")
            t = _run(launcher, "tools/extract_faces.py",
                     ["--input", os.path.join(tmp, "videos"), "--out", out, "--all",
                      "--workers", "1"], max(1, threads // ranks))
            manifest = open(os.path.join(out, "manifest.jsonl"), "rb").read()
            reference = reference or manifest
            assert manifest == reference, f"{name}: another manifest than one process's"
            base = base or t
            print(f"| {name} | {t:.1f} | {frames / t:.1f} | {base / t:.2f} |", flush=True)
        print(f"\nscoring (RECCE, {args.shard_size} px): {args.shard_crops} face crops, batch "
              f"{args.infer_batch}")
        print("| run | s | crops/s | x python |")
        print("| --- | --- | --- | --- |")
        reference, base = None, None
        for name, launcher, ranks in _launchers(29711):
            out = os.path.join(tmp, f"scores_{ranks}_{len(launcher)}.csv")
            t = _run(launcher, "inference.py",
                     ["-b", ckpt, "-f", os.path.join(tmp, "crops"), "-d", "cpu", "-s",
                      str(args.shard_size), "--batch_size", str(args.infer_batch),
                      "--num_workers", "1", "--output", out], max(1, threads // ranks))
            rows = open(out, "rb").read()
            reference = reference or rows
            assert rows == reference, f"{name}: other rows than one process's"
            base = base or t
            print(f"| {name} | {t:.1f} | {args.shard_crops / t:.1f} | {base / t:.2f} |",
                  flush=True)
