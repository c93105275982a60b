"""Benchmarks: printed tables, never timed unit tests.

    python tools/benchmark.py model      # training step and eval forward: RECCE vs bare Xception
    python tools/benchmark.py data       # training loader images/s for 0, 1 and 2 workers
    python tools/benchmark.py inference  # inference.py's streaming path vs preload-everything
    python tools/benchmark.py video      # inference.py --video: decode / detect / score, memory
    python tools/benchmark.py shard      # extract_faces.py and inference.py: 1 and 2 torchrun ranks
    python tools/benchmark.py backends   # scoring by backend and precision: forward, API, video
    python tools/benchmark.py contention # the demo's training alone and beside a busy process

Compare ratios measured in the same run: this machine is shared and noisy.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py

import torch  # noqa: E402

from model.blocks import loop_reasoning_forward  # noqa: E402


def _median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_model(args):
    import timm
    from model import Recce, RecceLoss

    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    y = torch.arange(args.batch) % 2
    rows = []

    def xception_setup():
        net = timm.create_model("legacy_xception", num_classes=1)
        opt = torch.optim.Adam(net.parameters(), lr=2e-4)

        def step():
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x)[:, 0], y.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return net, step

    def recce_setup(original=False):
        net = Recce(num_classes=1, channels_last=not original)
        if original:  # NCHW and the per-position loop, as the original release ran
            import types
            net.reasoning.forward = types.MethodType(loop_reasoning_forward, net.reasoning)
        crit = RecceLoss()
        opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4)

        def step():
            loss = crit(net(x, return_aux=True), x, y)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return net, step

    setups = [("legacy_xception", xception_setup), ("Recce", recce_setup)]
    if not args.skip_original:
        setups.append(("Recce, original-style (NCHW, loop)", lambda: recce_setup(original=True)))
    built = [(name, *setup()) for name, setup in setups]
    # Interleaved: every repeat times each model once, so that drift on a shared machine hits
    # all of them alike.
    train_t = {name: [] for name, _, _ in built}
    eval_t = {name: [] for name, _, _ in built}
    for r in range(args.repeats + 1):
        for name, net, step in built:
            net.train()
            start = time.perf_counter()
            step()
            t_train = time.perf_counter() - start
            net.eval()
            with torch.no_grad():
                start = time.perf_counter()
                net(x)
                t_eval = time.perf_counter() - start
            if r:  # the first round is warm-up
                train_t[name].append(t_train)
                eval_t[name].append(t_eval)
    results = {name: (statistics.median(train_t[name]), statistics.median(eval_t[name]))
               for name, _, _ in built}
    base = results["legacy_xception"]
    print(f"\nbatch {args.batch}, {args.size} px, {torch.get_num_threads()} CPU threads, "
          f"torch {torch.__version__}, median of {args.repeats}")
    print("| model | train step (s) | x Xception | eval forward (s) | x Xception |")
    print("| --- | --- | --- | --- | --- |")
    for name, (tt, te) in results.items():
        rows.append(f"| {name} | {tt:.3f} | {tt / base[0]:.2f} | {te:.3f} | {te / base[1]:.2f} |")
    print("\n".join(rows))
    orig = results.get("Recce, original-style (NCHW, loop)")
    if orig:
        print(f"\nRecce vs the original-style RECCE: training step {orig[0] / results['Recce'][0]:.2f}x "
              f"faster, eval forward {orig[1] / results['Recce'][1]:.2f}x faster")


def bench_data(args):
    """The training loader on 320 px PNG face crops (what tools/extract_faces.py writes), resized
    to ``--size`` with a flip and normalization, batch ``--data-batch``: uint8 handed over by the
    workers and normalised in the main process (as the trainer does) against float handed over
    (earlier releases), and the per-image costs in one process."""
    import tempfile

    import cv2
    from torch.utils.data import DataLoader

    from dataset import build_dataset, collate
    from dataset.base import read_rgb, to_input
    from dataset.demo import load_sources

    faces = load_sources()
    with tempfile.TemporaryDirectory() as tmp:
        n = args.data_batch * args.data_batches
        paths = []
        for i in range(n):
            label = "real" if i % 2 == 0 else "fake"
            img = cv2.resize(faces[i % len(faces)], (320, 320), interpolation=cv2.INTER_CUBIC)
            os.makedirs(os.path.join(tmp, label, str(i // 8)), exist_ok=True)
            paths.append(os.path.join(tmp, label, str(i // 8), f"{i}.png"))
            cv2.imwrite(paths[-1], img[:, :, ::-1])
        branch = {
            "root": tmp,
            "transforms": [{"name": "Resize", "params": {"height": args.size, "width": args.size}},
                           {"name": "HorizontalFlip", "params": {"p": 0.5}},
                           {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}],
        }
        uint8 = build_dataset("ImageList", branch, seed=0, defer_normalize=True)
        floats = build_dataset("ImageList", branch, seed=0)
        per = {"decode (read_rgb)": lambda: [read_rgb(p) for p in paths[:64]],
               "sample, uint8 out": lambda: [uint8[i] for i in range(64)],
               "sample, float out": lambda: [floats[i] for i in range(64)]}
        print(f"\nper image, one process: 320 px PNG -> {args.size} px")
        print("| step | ms |")
        print("| --- | --- |")
        for name, fn in per.items():
            print(f"| {name} | {_median_time(fn, 3) / 64 * 1000:.2f} |")
        print(f"\ntraining loader: 320 px PNG faces -> {args.size} px, batch {args.data_batch}, "
              f"{len(uint8)} images, {torch.get_num_threads()} CPU threads in the main process")
        print("| workers | hand-over | images/s | per worker |")
        print("| --- | --- | --- | --- |")
        for workers in (1, 2):
            for name, ds in (("uint8 + normalise in main", uint8), ("float (before)", floats)):
                loader = DataLoader(ds, batch_size=args.data_batch, shuffle=True,
                                    num_workers=workers, persistent_workers=True,
                                    collate_fn=collate)

                def run():
                    for batch in loader:
                        to_input(batch, "cpu")
                run()  # warm-up: worker start, file cache
                t = _median_time(run, 3, warmup=0)
                print(f"| {workers} | {name} | {len(ds) / t:.0f} | {len(ds) / t / workers:.0f} |")
    from dataset.self_blended import print_loader_rates  # the same loader on real faces + SBI
    print_loader_rates(size=args.size, batch=args.data_batch, batches=args.data_batches)


def _shard_inputs(tmp, videos, frames, crops):
    import cv2
    import matplotlib.cbook
    import numpy as np
    import torch
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


def _shard_launchers(port):
    one = [sys.executable]
    return [("python (1 process)", one, 1),
            ("torchrun, 1 rank", [sys.executable, "-m", "torch.distributed.run",
                                  "--nproc_per_node=1", f"--master_port={port}"], 1),
            ("torchrun, 2 ranks", [sys.executable, "-m", "torch.distributed.run",
                                   "--nproc_per_node=2", f"--master_port={port + 1}"], 2)]


def bench_shard(args):
    """Face extraction and scoring spread over processes: the same commands as one process and
    under ``torchrun`` with 1 and 2 ranks (gloo, the CPU). Every run is the whole command in a
    fresh process (start-up, model loading and the merge included), on inputs made here: short
    videos of a real face and face crops of random pixels, scored by a randomly initialized RECCE;
    every run's outputs are checked to be those of the one-process run."""
    import torch
    threads = args.threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = _shard_inputs(tmp, args.shard_videos, args.shard_frames, args.shard_crops)
        frames = args.shard_videos * args.shard_frames
        print(f"\n{os.cpu_count()} CPU cores; every run is the whole command (start-up, model "
              "loading, merge included); workers per rank 1, torch threads per process: "
              f"{threads} for one process, {threads} divided among the ranks under torchrun")
        if args.shard_videos:
            print(f"\nextraction (dlib): {args.shard_videos} videos x {args.shard_frames} "
                  "frames, 640 x 400 px, every frame")
            _time_ranks(29701, "tools/extract_faces.py", "frames", frames, threads,
                        lambda out: ["--input", os.path.join(tmp, "videos"), "--out", out,
                                     "--all", "--workers", "1"],
                        lambda ranks, n: os.path.join(tmp, f"faces_{ranks}_{n}"),
                        lambda out: os.path.join(out, "manifest.jsonl"), "manifest")
        if args.shard_crops:
            print(f"\nscoring (RECCE, {args.shard_size} px): {args.shard_crops} face crops, "
                  f"batch {args.infer_batch}")
            _time_ranks(29711, "inference.py", "crops", args.shard_crops, threads,
                        lambda out: ["-b", ckpt, "-f", os.path.join(tmp, "crops"), "-d", "cpu",
                                     "-s", str(args.shard_size), "--batch_size",
                                     str(args.infer_batch), "--num_workers", "1", "--output",
                                     out],
                        lambda ranks, n: os.path.join(tmp, f"scores_{ranks}_{n}.csv"),
                        lambda out: out, "rows")


def _time_ranks(port, script, unit, count, threads, arguments, output, result, what):
    """One table: ``script`` run by each of ``_shard_launchers`` (one process, torchrun with 1
    and 2 ranks), ``arguments(out)`` its flags, its threads divided among the ranks; the file
    ``result(out)`` of every run must be the one-process run's (``what`` names it)."""
    print(f"| run | s | {unit}/s | x python |")
    print("| --- | --- | --- | --- |")
    reference, base = None, None
    for name, launcher, ranks in _shard_launchers(port):
        out = output(ranks, len(launcher))
        t = _run_command(launcher, script, arguments(out), max(1, threads // ranks))
        made = open(result(out), "rb").read()
        reference = reference or made
        assert made == reference, f"{name}: other {what} than one process's"
        base = base or t
        print(f"| {name} | {t:.1f} | {count / t:.1f} | {base / t:.2f} |", flush=True)


# -- contention: the demo's training alone and beside a second busy process (a scoring loop:
# RECCE forward passes at torch's default threads), under the training defaults (threads from the
# cores it may use less its loader workers, waiting threads asleep) and under the settings before
# them (one intra-op thread per core, threads spinning while they wait). The training rate is the
# images/s of its logging windows after the first; the target is a busy/quiet ratio of at least
# 0.4 (the fair share of one of two busy processes is 0.5).
# a second user's process: scoring crops as fast as it can, with torch's default threads
COMPETITOR = """
import sys, torch
sys.path.insert(0, sys.argv[1])
from model import Recce
model = Recce().eval()
x = torch.rand(8, 3, 64, 64)
with torch.no_grad():
    while True:
        model(x)
"""


def _train_rate(run_root, steps, extra_env, extra_args):
    """images/s of the demo's training over its logging windows after the first (a window of 25
    steps), from the trainer's own log lines."""
    env = {**os.environ, **extra_env}
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), "--opt", f"train_cfg.num_steps={steps}",
           "--opt", "train_cfg.log_steps=25", "--opt", f"train_cfg.val_steps={steps * 10}",
           "--opt", f"config.ckpt_fold={run_root}",
           "--opt", f"config.id=c{int(time.time() * 1000)}"] + extra_args
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600)
    if out.returncode:
        raise SystemExit(f"training failed: {out.stderr[-600:]}")
    log = out.stdout + out.stderr
    rates = [float(m) for m in re.findall(r"step \d+/\d+  loss .* (\d+(?:\.\d+)?) img/s", log)]
    if len(rates) < 2:
        raise SystemExit(f"no rate in the training log: {log[-600:]}")
    return sum(rates[1:]) / len(rates[1:])


def bench_contention(args):
    steps = args.contention_steps
    settings = [
        ("defaults (threads by cores less loader workers, waiting threads asleep)", {}, []),
        # an empty OMP_WAIT_POLICY is OpenMP's own default (spin, then sleep), as before
        ("one thread per core, OpenMP's default waiting", {"OMP_WAIT_POLICY": ""},
         ["--threads", str(os.cpu_count() or 1)]),
    ]
    print(f"demo training, {steps} steps, {os.cpu_count()} cores "
          f"(affinity {len(os.sched_getaffinity(0))}); rate = mean images/s after the first "
          "25-step window")
    print(f"{'setting':<72} {'quiet':>7} {'busy':>7} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as runs:
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "make_demo_dataset.py")],
                       cwd=ROOT, capture_output=True, timeout=600)
        for name, env, extra in settings:
            quiet = _train_rate(runs, steps, env, extra)
            rival = subprocess.Popen([sys.executable, "-c", COMPETITOR, ROOT],
                                     env={**os.environ, "OMP_WAIT_POLICY": ""},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(3)  # the rival at work before the training starts
                busy = _train_rate(runs, steps, env, extra)
            finally:
                rival.kill()
                rival.wait()
            print(f"{name:<72} {quiet:7.1f} {busy:7.1f} {busy / quiet:6.2f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["model", "data", "inference", "video", "backends", "shard",
                                                  "contention"], nargs="?", default="model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=299)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-original", action="store_true",
                        help="model: do not time the original-style RECCE (NCHW, per-position loop)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: as available)")
    parser.add_argument("--data-batch", type=int, default=32)
    parser.add_argument("--data-batches", type=int, default=8)
    parser.add_argument("--images", type=int, nargs=2, default=[50, 1000],
                        help="inference: the two folder sizes compared for peak memory")
    parser.add_argument("--infer-batch", type=int, default=2, help="inference: batch size")
    parser.add_argument("--infer-workers", type=int, default=2, help="inference: workers")
    parser.add_argument("--shard-videos", type=int, default=8, help="shard: videos extracted (0: none)")
    parser.add_argument("--shard-frames", type=int, default=10, help="shard: frames per video")
    parser.add_argument("--shard-crops", type=int, default=64, help="shard: crops scored (0: none)")
    parser.add_argument("--shard-size", type=int, default=128, help="shard: scoring input size")
    parser.add_argument("--compile", action="store_true",
                        help="backends: also time torch.compile (minutes to compile on a CPU)")
    parser.add_argument("--api-images", type=int, default=32,
                        help="backends: crops scored through the API per repeat")
    parser.add_argument("--ckpt", help="backends: the demo's checkpoint (video and test AUC)")
    parser.add_argument("--contention-steps", type=int, default=100,
                        help="contention: training steps per run")
    parser.add_argument("--config", help="backends: its run's config.yml (the test split)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.what == "model":
        bench_model(args)
    elif args.what == "data":
        bench_data(args)
    elif args.what == "shard":
        bench_shard(args)
    elif args.what == "contention":
        bench_contention(args)
    elif args.what == "backends":
        from tools.bench_backends import bench_backends
        bench_backends(args)
    elif args.what == "video":
        from tools.bench_video import bench_video
        bench_video(args)
    else:
        from tools.bench_inference import bench_inference
        bench_inference(args)


if __name__ == "__main__":
    main()
