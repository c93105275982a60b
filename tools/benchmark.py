"""Benchmarks: printed tables, never timed unit tests; one sub-command per table.

    python tools/benchmark.py model      # training step and eval forward: RECCE vs bare Xception
    python tools/benchmark.py data       # training loader images/s for 1 and 2 workers
    python tools/benchmark.py inference  # inference.py's streaming path vs preload-everything
    python tools/benchmark.py video      # inference.py --video: decode / detect / score, memory
    python tools/benchmark.py shard      # extract_faces.py and inference.py: 1 and 2 torchrun ranks
    python tools/benchmark.py backends   # scoring by backend and precision: forward, API, video
    python tools/benchmark.py contention # the demo's training alone and beside a busy process
    python tools/benchmark.py serve --checkpoint FILE  # the page under load, against inference.py
    python tools/benchmark.py gpu        # the GPU tables (tools/gpu_check.py --bench: with checks)

With no sub-command, ``model``. ``--figures docs/figures.json`` records the run's figures there
(under the sub-command's name), where the docs' quotes of them are checked (tests/test_docs.py).
Compare ratios measured in the same run: a shared machine is noisy. The measurements live in
benchmarks/, one module per sub-command.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py

import torch

from errors import run_cli

COMMANDS = ("model", "data", "inference", "video", "shard", "backends", "contention", "serve",
            "gpu")


def _model(a):
    from benchmarks.models import bench_model
    return bench_model(a.batch, a.size, a.repeats, a.skip_original)


def _data(a):
    from benchmarks.loader import bench_data
    return bench_data(a.size, a.data_batch, a.data_batches)


def _inference(a):
    from benchmarks.inference import bench_inference
    return bench_inference(a.images, a.size, a.infer_batch, a.infer_workers)


def _video(a):
    from benchmarks.video import bench_video
    return bench_video(a.size)


def _shard(a):
    from benchmarks.shard import bench_shard
    return bench_shard(a.shard_videos, a.shard_frames, a.shard_crops, a.shard_size,
                       a.infer_batch, a.threads)


def _backends(a):
    from benchmarks.backends import bench_backends
    return bench_backends(a.repeats, a.size, a.api_images, a.compile, a.ckpt, a.config)


def _contention(a):
    from benchmarks.contention import bench_contention
    return bench_contention(a.contention_steps)


def _serve(a):
    from benchmarks.serve import bench_serve
    return bench_serve(a.checkpoint, a.video, a.uploads, a.pollers, a.frames, a.repeats,
                       a.seconds)


def _gpu(a):
    from benchmarks.gpu import PARTS, bench
    from errors import UserError
    parts = [part for part in a.parts.split(",") if part]
    if set(parts) - set(PARTS):
        raise UserError(f"--parts: unknown {', '.join(sorted(set(parts) - set(PARTS)))} "
                        f"(known: {', '.join(PARTS)})")
    best = bench(a.device, a.size, a.batch, a.steps, parts)
    return {f"{name.lower()}_best_images_per_s": round(rate, 1)
            for name, (rate, _, _) in best.items() if rate == rate}


def parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, default=0, help="CPU threads (0: as available)")
    common.add_argument("--figures", metavar="FILE",
                        help="record the figures of this run in FILE (docs/figures.json), under "
                             "the sub-command's name")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", metavar="{" + ",".join(COMMANDS) + "}")

    def command(name, run, text, size=299):
        s = sub.add_parser(name, help=text, description=text, parents=[common])
        s.set_defaults(run=run)
        if size:
            s.add_argument("--size", type=int, default=size, help=f"input side ({size})")
        return s

    s = command("model", _model, "training step and eval forward: RECCE vs bare Xception")
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--skip-original", action="store_true",
                   help="do not time the original-style RECCE (NCHW, per-position loop)")
    s = command("data", _data, "training loader images/s for 1 and 2 workers")
    s.add_argument("--data-batch", type=int, default=32)
    s.add_argument("--data-batches", type=int, default=8)
    s = command("inference", _inference, "inference.py's streaming path vs preload-everything")
    s.add_argument("--images", type=int, nargs=2, default=[50, 1000],
                   help="the two folder sizes compared for peak memory")
    s.add_argument("--infer-batch", type=int, default=2, help="batch size")
    s.add_argument("--infer-workers", type=int, default=2, help="workers")
    command("video", _video, "inference.py --video: decode / detect / score, memory")
    s = command("shard", _shard, "extract_faces.py and inference.py: 1 and 2 torchrun ranks",
                size=0)
    s.add_argument("--shard-videos", type=int, default=8, help="videos extracted (0: none)")
    s.add_argument("--shard-frames", type=int, default=10, help="frames per video")
    s.add_argument("--shard-crops", type=int, default=64, help="crops scored (0: none)")
    s.add_argument("--shard-size", type=int, default=128, help="scoring input size")
    s.add_argument("--infer-batch", type=int, default=2, help="scoring batch size")
    s = command("backends", _backends, "scoring by backend and precision: forward, API, video")
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--compile", action="store_true",
                   help="also time torch.compile (minutes to compile on a CPU)")
    s.add_argument("--api-images", type=int, default=32, help="crops scored through the API per "
                                                              "repeat")
    s.add_argument("--ckpt", help="the demo's checkpoint (video and test AUC)")
    s.add_argument("--config", help="its run's config.yml (the test split)")
    s = command("contention", _contention, "the demo's training alone and beside a busy process",
                size=0)
    s.add_argument("--contention-steps", type=int, default=100, help="training steps per run")
    s = command("serve", _serve, "the page's server under load, and its speed against "
                                 "inference.py (loopback only)", size=0)
    s.add_argument("--checkpoint", required=True, help="the detector's checkpoint")
    s.add_argument("--video", help="the video to score (default: a 10 s 720p clip made here)")
    s.add_argument("--uploads", type=int, default=20, help="photos uploaded at once (<= 100)")
    s.add_argument("--pollers", type=int, default=4, help="clients polling the API meanwhile")
    s.add_argument("--frames", type=int, default=32, help="frames scored of the video (32)")
    s.add_argument("--repeats", type=int, default=2, help="runs of each side of the speed test")
    s.add_argument("--seconds", type=float, default=900,
                   help="give up after this long in all (<= 1800)")
    s = command("gpu", _gpu, "the GPU throughput tables (tools/gpu_check.py --bench runs them "
                             "after its checks)")
    s.add_argument("--device", default="cuda:0")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--parts", default="train,inference,profile,e2e,graphs",
                   help="which tables, comma-separated (default all)")
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        # the sub-command first (it could follow its flags before); none: the model table
        at = next((i for i, word in enumerate(argv) if word in COMMANDS), None)
        argv = ["model"] + argv if at is None else [argv[at]] + argv[:at] + argv[at + 1:]
    args = parser().parse_args(argv)

    def body():
        if args.threads:
            torch.set_num_threads(args.threads)
        figures = args.run(args)
        if args.figures:
            from benchmarks.figures import record
            # the command that measured it, less the recording
            at = next(i for i, word in enumerate(argv) if word.startswith("--figures"))
            rest = argv[at + (1 if "=" in argv[at] else 2):]
            record(args.figures, args.what, ["python", "tools/benchmark.py"] + argv[:at] + rest,
                   figures)
            print(f"figures of {args.what} recorded in {args.figures}")
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
