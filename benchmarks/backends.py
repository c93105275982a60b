"""``tools/benchmark.py backends``: scoring on the CPU by backend and precision, side by side in
one run (medians of interleaved repeats, random weights unless a checkpoint is given):

1. images/s of the forward alone: eager fp32, channels-last fp32, bf16 (autocast, channels-last),
   ``torch.compile`` (with ``--compile``: minutes to compile), ONNX Runtime; batch 1 and 8, at
   299 px and 64 px;
2. the Python API (``Predictor.predict`` on RGB crops, decoding and preparation included) at
   ``--size`` by backend and precision, as a user scores;
3. with ``--ckpt`` and ``--config`` (the demo's run): a 10-second video's time to verdict by
   each, and bf16's effect on the test split: AUC, largest and mean probability difference,
   verdicts changed.
"""
import csv
import os
import tempfile

import numpy as np
import torch

from benchmarks.timing import interleaved


def _forwards(model, size, compile_too):
    from model import backends as B
    from model.detector import scores
    cpu = torch.device("cpu")
    model.spec = model.spec.with_size(size)
    eager = B.build_scorer(model, cpu, "torch", "fp32")
    cl = B._Bf16Scorer(model)  # its channels-last copy, run in fp32
    bf16 = B.build_scorer(model, cpu, "torch", "bf16")
    out = {"eager fp32": eager.run}

    def channels_last(x):
        with torch.inference_mode():
            return scores(cl.fast(x.contiguous(memory_format=torch.channels_last)))
    out["channels-last fp32"] = channels_last
    out["bf16 (autocast, channels-last)"] = bf16.run
    if compile_too:
        compiled = torch.compile(model)

        def run_compiled(x):
            with torch.inference_mode():
                return scores(compiled(x))
        out["torch.compile fp32"] = run_compiled
    ort = B.build_scorer(model, cpu, "onnxruntime", "fp32")
    if ort.backend == "onnxruntime":
        out["onnxruntime fp32"] = ort.run
    return out


# the columns of the forward table: (figure key, printed name)
FORWARDS = (("eager", "eager fp32"), ("channels_last", "channels-last fp32"),
            ("bf16", "bf16 (autocast, channels-last)"), ("compile", "torch.compile fp32"),
            ("onnxruntime", "onnxruntime fp32"))


def bench_backends(repeats=5, size=299, api_images=32, compile_too=False, ckpt=None, config=None):
    """Prints the tables; returns their figures: ``forward_<size>_<batch>_<backend>`` (images/s)
    and ``..._x`` (ratio to eager fp32); the API's (``bench_api``); with ``ckpt`` and ``config``
    the demo checkpoint's (``bench_demo``)."""
    from model import Recce
    from model.backends import native_bf16
    print(f"threads: {torch.get_num_threads()}; native bf16: "
          f"{', '.join(native_bf16()) or 'none'}")
    print("\n## forward alone, images/s (ratio to eager fp32)\n")
    columns = [(k, name) for k, name in FORWARDS if compile_too or k != "compile"]
    print("| size | batch | " + " | ".join(name for _, name in columns) + " |")
    print("| --- " * (2 + len(columns)) + "|")
    figures = {}
    for side in (299, 64):
        torch.manual_seed(0)
        model = Recce().eval()
        fns = _forwards(model, side, compile_too)
        for batch in (1, 8):
            x = torch.rand(batch, 3, side, side) * 2 - 1
            t = interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, repeats)
            base = batch / t["eager fp32"]
            cells = []
            for key, name in columns:
                if name not in fns:  # ONNX Runtime not installed
                    continue
                rate = batch / t[name]
                figures[f"forward_{side}_{batch}_{key}"] = round(rate, 1)
                figures[f"forward_{side}_{batch}_{key}_x"] = round(rate / base, 2)
                cells.append(f"{rate:.1f} ({rate / base:.2f}x)")
            print(f"| {side} | {batch} | " + " | ".join(cells) + " |", flush=True)
    figures.update(bench_api(repeats, size, api_images))
    if ckpt and config:
        figures.update(bench_demo(ckpt, config, repeats))
    return figures


# the rows of the API table: (figure key, keywords of Predictor.from_checkpoint)
API_KINDS = (("torch", {}), ("bf16", {"precision": "bf16"}),
             ("onnxruntime", {"backend": "onnxruntime"}))


def bench_api(repeats=5, size=299, api_images=32):
    """The Python API on ``api_images`` random crops; figures ``api_<kind>_images_per_s``,
    ``api_<kind>_x`` (ratio to torch fp32) and ``api_<kind>_max_diff`` (largest probability
    difference from torch fp32) for torch, bf16 and onnxruntime."""
    from faces import Predictor
    from model import InputSpec, Recce
    print(f"\n## the Python API at {size} px, {api_images} crops, batch 8 "
          "(decoding and preparation included): images/s\n")
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = os.path.join(tmp, "recce.bin")
        torch.save({"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
                    "input_spec": InputSpec((size, size), (0.5,) * 3,
                                            (0.5,) * 3).to_dict()}, path)
        rng = np.random.default_rng(0)
        crops = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                 for _ in range(api_images)]
        dets = {k: Predictor.from_checkpoint(path, "cpu", batch_size=8, **kw)
                for k, kw in API_KINDS}
        ref = dets["torch"].predict(crops)
        t = interleaved({k: (lambda d=d: d.predict(crops)) for k, d in dets.items()}, repeats)
        print("| scored by | images/s | ratio to eager fp32 | max abs. probability difference |")
        print("| --- | --- | --- | --- |")
        for k, d in dets.items():
            diff = max(abs(a - b) for a, b in zip(d.predict(crops), ref))
            figures.update({f"api_{k}_images_per_s": round(len(crops) / t[k], 1),
                            f"api_{k}_x": round(t["torch"] / t[k], 2),
                            f"api_{k}_max_diff": float(f"{diff:.1e}")})
            print(f"| {d.forward.describe() if k != 'torch' else 'torch fp32'} | "
                  f"{len(crops) / t[k]:.1f} | {t['torch'] / t[k]:.2f}x | {diff:.1e} |",
                  flush=True)
    return figures


def ten_second_video(path, fps=25, size=(1280, 720)):
    """A 10-second 720p MJPEG video of matplotlib's Grace Hopper portrait moving to and fro."""
    import cv2
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (360, 420))
    w, h = size
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for f in range(10 * fps):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = 100 + (f * 7) % (w - 560)
        canvas[150:570, x:x + 360] = face
        writer.write(canvas)
    writer.release()
    return path


def bench_demo(ckpt, config, repeats=5):
    """The demo's checkpoint: figures ``video_<kind>_s`` (a 10-second video to its verdict) for
    torch, bf16 and onnxruntime; on its test split ``test_frames``, ``test_auc_fp32``,
    ``test_auc_bf16``, ``test_diff_max``, ``test_diff_mean`` and ``test_changed`` (verdicts at
    0.5 that bf16 changes)."""
    from faces import Predictor
    from trainer.config import load_config
    from trainer.evaluation_report import run_test
    print(f"\n## the demo's checkpoint ({os.path.basename(ckpt)})\n")
    names = {"torch": "torch fp32", "bf16": "torch bf16", "onnxruntime": "onnxruntime fp32"}
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        video = ten_second_video(os.path.join(tmp, "ten_seconds.avi"))
        dets = {k: Predictor.from_checkpoint(ckpt, "cpu", **kw) for k, kw in API_KINDS}
        t = interleaved({k: (lambda d=d: d.predict_video(video)) for k, d in dets.items()},
                        max(1, repeats // 2))
        print("| 10-second 720p video (32 frames, dlib) | time to verdict (s) |")
        print("| --- | --- |")
        for k in dets:
            figures[f"video_{k}_s"] = round(t[k], 2)
            print(f"| {names[k]} | {t[k]:.2f} |", flush=True)
        cfg = load_config(config)
        res = {}
        for precision in ("fp32", "bf16"):
            metrics, *_ = run_test(cfg, ckpt, "cpu", os.path.join(tmp, precision),
                                   precision=precision)
            with open(os.path.join(tmp, precision, "scores.csv")) as fh:
                rows = list(csv.DictReader(fh))
            res[precision] = (metrics["AUC"], np.array([float(r["raw_probability"])
                                                        for r in rows]))
        dp = np.abs(res["bf16"][1] - res["fp32"][1])
        changed = int(((res["bf16"][1] >= 0.5) != (res["fp32"][1] >= 0.5)).sum())
        figures.update(test_frames=len(dp), test_auc_fp32=round(float(res["fp32"][0]), 4),
                       test_auc_bf16=round(float(res["bf16"][0]), 4),
                       test_diff_max=round(float(dp.max()), 4),
                       test_diff_mean=round(float(dp.mean()), 4), test_changed=changed)
        print(f"\ntest split, {len(dp)} frames: AUC fp32 {res['fp32'][0]:.4f}, bf16 "
              f"{res['bf16'][0]:.4f}; |dp| max {dp.max():.4f}, mean {dp.mean():.4f}; "
              f"verdicts changed at 0.5: {changed}")
    return figures
