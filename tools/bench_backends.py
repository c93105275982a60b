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
import os
import statistics
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _interleaved(fns, repeats):
    """Median seconds of each of ``fns`` (name -> callable), run in turns ``repeats`` times after
    one warm-up each, so that a busy machine slows all of them alike."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


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


def bench_backends(args):
    from model import Recce
    print(f"threads: {torch.get_num_threads()}; native bf16: "
          f"{', '.join(__import__('model.backends', fromlist=['x']).native_bf16()) or 'none'}")
    print("\n## forward alone, images/s (ratio to eager fp32)\n")
    print("| size | batch | " + " | ".join(["eager fp32", "channels-last fp32",
                                             "bf16 (autocast, channels-last)"]
                                            + (["torch.compile fp32"] if args.compile else [])
                                            + ["onnxruntime fp32"]) + " |")
    print("| --- " * (4 + args.compile + 2) + "|")
    for size in (299, 64):
        torch.manual_seed(0)
        model = Recce().eval()
        fns = _forwards(model, size, args.compile)
        for batch in (1, 8):
            x = torch.rand(batch, 3, size, size) * 2 - 1
            t = _interleaved({k: (lambda f=f: f(x)) for k, f in fns.items()}, args.repeats)
            base = batch / t["eager fp32"]
            cells = [f"{batch / t[k]:.1f} ({batch / t[k] / base:.2f}x)" for k in fns]
            print(f"| {size} | {batch} | " + " | ".join(cells) + " |", flush=True)
    bench_api(args)
    if args.ckpt and args.config:
        bench_demo(args)


def bench_api(args):
    from faces import Predictor
    from model import Recce
    print(f"\n## the Python API at {args.size} px, {args.api_images} crops, batch 8 "
          "(decoding and preparation included): images/s\n")
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        from model import InputSpec
        path = os.path.join(tmp, "recce.bin")
        torch.save({"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
                    "input_spec": InputSpec((args.size, args.size), (0.5,) * 3,
                                            (0.5,) * 3).to_dict()}, path)
        rng = np.random.default_rng(0)
        crops = [rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
                 for _ in range(args.api_images)]
        kinds = {"eager fp32": {}, "bf16": {"precision": "bf16"},
                 "onnxruntime": {"backend": "onnxruntime"}}
        dets = {k: Predictor.from_checkpoint(path, "cpu", batch_size=8, **kw)
                for k, kw in kinds.items()}
        ref = dets["eager fp32"].predict(crops)
        t = _interleaved({k: (lambda d=d: d.predict(crops)) for k, d in dets.items()},
                         args.repeats)
        print("| scored by | images/s | ratio to eager fp32 | max abs. probability difference |")
        print("| --- | --- | --- | --- |")
        for k, d in dets.items():
            diff = max(abs(a - b) for a, b in zip(d.predict(crops), ref))
            print(f"| {d.forward.describe() if k != 'eager fp32' else 'torch fp32'} | "
                  f"{len(crops) / t[k]:.1f} | {t['eager fp32'] / t[k]:.2f}x | {diff:.1e} |",
                  flush=True)


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


def bench_demo(args):
    from faces import Predictor
    from trainer.config import load_config
    from trainer.evaluation_report import run_test
    print(f"\n## the demo's checkpoint ({os.path.basename(args.ckpt)})\n")
    with tempfile.TemporaryDirectory() as tmp:
        video = ten_second_video(os.path.join(tmp, "ten_seconds.avi"))
        kinds = {"torch fp32": {}, "torch bf16": {"precision": "bf16"},
                 "onnxruntime fp32": {"backend": "onnxruntime"}}
        dets = {k: Predictor.from_checkpoint(args.ckpt, "cpu", **kw) for k, kw in kinds.items()}
        t = _interleaved({k: (lambda d=d: d.predict_video(video)) for k, d in dets.items()},
                         max(1, args.repeats // 2))
        print("| 10-second 720p video (32 frames, dlib) | time to verdict (s) |")
        print("| --- | --- |")
        for k in dets:
            print(f"| {k} | {t[k]:.2f} |", flush=True)
        cfg = load_config(args.config)
        res = {}
        for precision in ("fp32", "bf16"):
            metrics, *_ = run_test(cfg, args.ckpt, "cpu", os.path.join(tmp, precision),
                                   precision=precision)
            import csv
            with open(os.path.join(tmp, precision, "scores.csv")) as fh:
                rows = list(csv.DictReader(fh))
            res[precision] = (metrics["AUC"], np.array([float(r["raw_probability"])
                                                        for r in rows]))
        dp = np.abs(res["bf16"][1] - res["fp32"][1])
        changed = int(((res["bf16"][1] >= 0.5) != (res["fp32"][1] >= 0.5)).sum())
        print(f"\ntest split, {len(dp)} frames: AUC fp32 {res['fp32'][0]:.4f}, bf16 "
              f"{res['bf16'][0]:.4f}; |dp| max {dp.max():.4f}, mean {dp.mean():.4f}; "
              f"verdicts changed at 0.5: {changed}")
