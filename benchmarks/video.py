"""``tools/benchmark.py video``: inference.py on videos, frames per second of each stage (decode,
detect, score) and peak memory for a 300- and a 3,000-frame video at ``--every 10``. Each
measurement runs in a fresh process, so that its peak memory (max RSS) is its own."""
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
os.environ["OPENCV_FFMPEG_LOGLEVEL"] = "-8"
import torch
torch.set_num_threads({threads})
video, ckpt, every, size = {args!r}
from faces.crop import crop_face
from faces.finders import build_face_finder
from faces.scoring import CropScorer
from faces.video import iter_frames
from model.checkpoint import load_detector
t0 = time.perf_counter(); frames = [f for _, _, f in iter_frames(video, None, every)]
t_decode = time.perf_counter() - t0
detector = build_face_finder("dlib")
t0 = time.perf_counter(); dets = [detector(f) for f in frames]; t_detect = time.perf_counter() - t0
crops = [crop_face(f, d[0].box) for f, d in zip(frames, dets) if d]
model = load_detector(ckpt, "cpu", image_size=size)
scorer = CropScorer(model, torch.device("cpu"), 8)
t0 = time.perf_counter(); scorer(crops); t_score = time.perf_counter() - t0
del frames, crops
import inference
t0 = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
    inference.main(["-b", ckpt, "--video", video, "--every", str(every), "-s", str(size),
                    "-d", "cpu"])
t_all = time.perf_counter() - t0
print(json.dumps(dict(decode=t_decode, detect=t_detect, score=t_score, all=t_all,
                      sampled=len(dets), faces=sum(1 for d in dets if d))))
"""

PEAK = r"""
import os, resource, sys, io, contextlib
sys.path.insert(0, {root!r})
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
import torch
torch.set_num_threads({threads})
video, ckpt, every, size = {args!r}
import inference
with contextlib.redirect_stdout(io.StringIO()):
    inference.main(["-b", ckpt, "--video", video, "--every", str(every), "-s", str(size),
                    "-d", "cpu"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _make_video(path, frames):
    import cv2
    import matplotlib.cbook
    import numpy as np
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        bgr = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(bgr, (180, 210))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 25, (640, 400))
    for f in range(frames):
        canvas = np.full((400, 640, 3), 90, np.uint8)
        ox, oy = 40 + (f * 3) % 400, 60 + (f * 2) % 120
        canvas[oy:oy + 210, ox:ox + 180] = face
        writer.write(canvas)
    writer.release()


def bench_video(size=299):
    """Prints the table; returns its figures for n = 300 and 3000 frames: ``frames<n>_sampled``,
    ``..._decode_per_s``, ``..._detect_per_s``, ``..._score_per_s``, ``..._inference_s``,
    ``..._peak_mb``, and ``memory_growth`` (3,000 frames' peak over 300's)."""
    import torch

    from model import Recce
    threads = torch.get_num_threads()
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "m.bin")
        torch.save({"model": Recce().state_dict()}, ckpt)
        print(f"\nvideo inference: 640 x 400 MJPEG, dlib, RECCE at {size} px, every 10th frame, "
              f"{threads} CPU threads")
        print("| frames | sampled | decode (frames/s) | detect (frames/s) | score (faces/s) | "
              "inference.py (s) | peak memory (MB) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        peaks = {}
        for n in (300, 3000):
            video = os.path.join(tmp, f"v{n}.avi")
            _make_video(video, n)
            child_args = (video, ckpt, 10, size)
            out = subprocess.run([sys.executable, "-c", CHILD.format(root=ROOT, threads=threads,
                                                                      args=child_args)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            peak = subprocess.run([sys.executable, "-c", PEAK.format(root=ROOT, threads=threads,
                                                                      args=child_args)],
                                  capture_output=True, text=True, check=True)
            peaks[n] = int(peak.stdout.strip().splitlines()[-1])
            row = {"sampled": r["sampled"], "decode_per_s": round(n / r["decode"]),
                   "detect_per_s": round(r["sampled"] / r["detect"], 1),
                   "score_per_s": round(r["faces"] / r["score"], 1),
                   "inference_s": round(r["all"], 1), "peak_mb": peaks[n]}
            figures.update({f"frames{n}_{k}": v for k, v in row.items()})
            print(f"| {n} | {r['sampled']} | {n / r['decode']:.0f} | "
                  f"{r['sampled'] / r['detect']:.1f} | {r['faces'] / r['score']:.1f} | "
                  f"{r['all']:.1f} | {peaks[n]} |", flush=True)
        figures["memory_growth"] = round(peaks[3000] / peaks[300], 2)
        print(f"\npeak memory, 3,000 frames / 300 frames: {peaks[3000] / peaks[300]:.2f} "
              "(target <= 1.3)")
    return figures
