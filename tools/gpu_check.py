"""The GPU path, checked in a few minutes on one GPU: one line per check, exit 1 if any fails.

    python tools/gpu_check.py                      # every check on cuda:0
    python tools/gpu_check.py --bench              # and the throughput tables
    python tools/gpu_check.py --no-checks --bench --bench-parts e2e,graphs   # some tables only
    # the CPU dry run:
    python tools/gpu_check.py --device cpu --size 64 --precision-steps 4 --bench --bench-batch 4

Checks: same-seed demo runs in fp32, fp16 (grad scaler from 2**10) and bf16 (no scaler), 100 steps
each (--precision-steps): finite losses and a final validation AUC within 0.03 of fp32's; a run
killed (SIGKILL) after a checkpoint and resumed, the loss going on; no host-device sync in the
steady state of a training step (fp16 and bf16, torch's sync debug mode); fp32 evaluation on the
device against the CPU (probabilities within 1e-4); SyncBatchNorm conversion (and NCCL with two
processes where there are two GPUs: two NCCL processes cannot share one GPU); inference.py and
test.py with --device. On the CPU the mixed-precision checks run in fp32 (the code path the trainer
takes there) and say so.
"""
import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch
import yaml

from benchmarks.gpu import PARTS
from trainer.hooks import Hook

RESULTS = []


def report(status, name, detail):
    RESULTS.append(status)
    print(f"{status} {name}: {detail}", flush=True)


def write_config(work, demo, device, size, amp, steps, val_steps, run_id, batch=8):
    ff = os.path.join(demo, "faceforensics")
    tf = [{"name": "Resize", "params": {"height": size, "width": size}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"train_cfg": {"root": ff, "split": "train", "log_steps": 1, "val_steps": val_steps,
                        "num_steps": steps, "transforms": tf},
          "val_cfg": {"root": ff, "split": "val", "transforms": tf}}
    with open(os.path.join(work, f"{run_id}_ds.yml"), "w") as fh:
        yaml.safe_dump(ds, fh)
    cfg = {"model": {"name": "Recce", "pretrained": False},
           "config": {"id": run_id, "ckpt_fold": os.path.join(work, "runs"), "amp": amp,
                      "metric": "AUC", "optimizer": {"name": "adam", "lr": 0.001},
                      "device": device, "distribute": {"backend": "nccl"}},
           "data": {"name": "FaceForensics", "file": os.path.join(work, f"{run_id}_ds.yml"),
                    "train_batch_size": batch, "val_batch_size": 32, "val_branch": "val_cfg",
                    "test_branch": "val_cfg", "num_workers": 2}}
    path = os.path.join(work, f"{run_id}.yml")
    with open(path, "w") as fh:
        yaml.safe_dump(cfg, fh)
    return path


def _trainer(work, demo, device, size, amp, steps, run_id):
    """A Trainer on the demo data, ``steps`` steps validated once at the end, its log quiet (one
    line per check)."""
    import logging

    from trainer.config import load_config
    from trainer.train import Trainer
    trainer = Trainer(load_config(write_config(work, demo, device, size, amp, steps, steps,
                                               run_id)))
    logging.getLogger().setLevel(logging.WARNING)
    return trainer


def _train(work, demo, device, size, amp, steps):
    """A same-seed demo run of ``steps`` steps in ``amp``: (trainer, losses, final val AUC)."""
    trainer = _trainer(work, demo, device, size, amp, steps, f"amp_{amp}")
    losses = _Losses()
    trainer.add_hook(losses)
    result = trainer.fit()
    trainer.close()
    return trainer, losses.totals, result["history"][-1][1]["AUC"]


class _Losses(Hook):
    """The loss total of every step taken."""

    def __init__(self):
        self.totals = []

    def after_step(self, trainer, losses):
        self.totals.append(float(losses["total"]))


def check_precisions(work, demo, device, size, steps):
    """fp16 (grad scaler from 2**10) and bf16 against a same-seed fp32 run of ``steps`` demo
    steps: every loss finite and the final validation AUC within 0.03 of fp32's. (A loss that
    merely decreases over 30 steps is a coin toss on this data, not a check.)"""
    _, ref_losses, ref_auc = _train(work, demo, device, size, "none", steps)
    report("PASS" if all(v == v and abs(v) != float("inf") for v in ref_losses) else "FAIL",
           "train fp32", f"{len(ref_losses)} steps, val AUC {ref_auc:.4f}")
    for amp in ("fp16", "bf16"):
        trainer, losses, auc = _train(work, demo, device, size, amp, steps)
        used, scaler = trainer.amp, trainer.scaler.is_enabled()
        finite = all(v == v and abs(v) != float("inf") for v in losses)
        ok = finite and abs(auc - ref_auc) <= 0.03 and scaler == (used == "fp16")
        scaling = f"on, scale {trainer.scaler.get_scale()}" if scaler else "off"
        detail = (f"{len(losses)} steps in {used}{' (CPU: full precision)' if used != amp else ''}"
                  f", grad scaler {scaling}"
                  f", val AUC {auc:.4f} (fp32 {ref_auc:.4f}, |diff| {abs(auc - ref_auc):.4f} "
                  f"<= 0.03)")
        report("PASS" if ok else "FAIL", f"train {amp}", detail)


def check_no_host_sync(work, demo, device, size, steps=5):
    """The steady state of a training step (fp16 with the grad scaler, and bf16) never makes the
    host wait for the GPU's queue: torch's sync debug mode counts every synchronising call (a
    blocking copy, .item(), a data-dependent shape) over ``steps`` steps after three warm-up
    steps; the loss's finiteness is read behind the forward through an event, which it does not
    count, by design (the backward is queued first)."""
    import warnings

    if not device.startswith("cuda"):
        report("SKIP", "no host sync in a training step", "needs CUDA (torch's sync debug mode)")
        return
    for amp in ("fp16", "bf16"):
        trainer = _trainer(work, demo, device, size, amp, 100, f"sync_{amp}")
        batches = trainer._batches()
        for _ in range(3):
            trainer.train_step(next(batches))
        todo = [next(batches) for _ in range(steps)]  # the loader's work is not the step's
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for batch in todo:
                    trainer.train_step(batch)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        trainer.close()
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        where = sorted({f"{os.path.relpath(w.filename, ROOT)}:{w.lineno}" for w in syncs})
        fused = bool(trainer.optimizer.param_groups[0].get("fused"))
        report("PASS" if not syncs else "FAIL", f"no host sync in a training step ({amp})",
               f"{len(syncs)} synchronising call(s) in {steps} steps (fused optimizer: {fused})"
               + (f" at {', '.join(where[:4])}" if where else ""))


def check_kill_and_resume(work, demo, device, size):
    cfg = write_config(work, demo, device, size, "fp16", 20, 5, "resume")
    proc = subprocess.Popen([sys.executable, "train.py", "--config", cfg], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = os.path.join(work, "runs", "Recce", "resume", "latest_model.bin")
    for line in proc.stdout:
        if "step 5 validation" in line:
            break
    while not os.path.isfile(latest) and proc.poll() is None:  # written after that line
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run([sys.executable, "train.py", "--config", cfg, "--opt",
                            "config.resume=true"], cwd=ROOT, capture_output=True, text=True)
    log = again.stdout + again.stderr
    resumed = [line for line in log.splitlines() if "resumed from" in line]
    state = torch.load(os.path.join(work, "runs", "Recce", "resume", "latest_model.bin"),
                       map_location="cpu", weights_only=True)
    ok = again.returncode == 0 and resumed and state["step"] == 20
    report("PASS" if ok else "FAIL", "kill and resume",
           (resumed[0].split("INFO ")[-1] if resumed else "no resume line") +
           f"; finished at step {state['step']}")
    return os.path.join(work, "runs", "Recce", "resume", "latest_model.bin"), cfg


def check_eval_parity(ckpt, cfg_path, device):
    from torch.utils.data import DataLoader

    from dataset import build_dataset, collate
    from model.checkpoint import load_detector
    from trainer.config import branch, load_config
    from trainer.evaluate import evaluate
    cfg = load_config(cfg_path)
    ds = build_dataset("FaceForensics", branch(cfg, "val"))
    loader = DataLoader(ds, batch_size=64, collate_fn=collate, num_workers=2)
    probs = {}
    for dev in (device, "cpu"):
        model = load_detector(ckpt, dev)
        probs[dev] = evaluate(model, loader, torch.device(dev))["prob"]
    diff = float(abs(probs[device] - probs["cpu"]).max())
    report("PASS" if diff <= 1e-4 else "FAIL", "fp32 evaluation vs CPU",
           f"max |p_{device} - p_cpu| = {diff:.2e} over {len(ds)} images")


def check_syncbn(device):
    from model import Recce
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(Recce())
    n = sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    ok = n > 0 and not any(type(m) is torch.nn.BatchNorm2d for m in model.modules())
    gpus = torch.cuda.device_count()
    report("PASS" if ok else "FAIL", "SyncBatchNorm conversion", f"{n} layers converted")
    if gpus < 2:
        report("SKIP", "NCCL with two processes",
               f"{gpus} GPU(s): two NCCL processes cannot share one GPU")


def check_cli(ckpt, cfg_path, device, size, work, demo):
    folder = os.path.join(demo, "celeb_df", "Celeb-synthesis", "images")
    folder = os.path.join(folder, sorted(os.listdir(folder))[0])
    inf = subprocess.run([sys.executable, "inference.py", "-b", ckpt, "-f", folder, "-d", device,
                          "-s", str(size)], cwd=ROOT, capture_output=True, text=True)
    report("PASS" if inf.returncode == 0 else "FAIL", f"inference.py --device {device}",
           f"{len(inf.stdout.splitlines())} lines" if inf.returncode == 0 else inf.stderr[-300:])
    test = subprocess.run([sys.executable, "test.py", "--config", cfg_path, "--ckpt", ckpt,
                           "--device", device, "--out", os.path.join(work, "test_out")],
                          cwd=ROOT, capture_output=True, text=True)
    auc = [line for line in test.stdout.splitlines() if line.startswith("AUC")]
    report("PASS" if test.returncode == 0 else "FAIL", f"test.py --device {device}",
           (auc[0] if auc else "") if test.returncode == 0 else test.stderr[-300:])


def run_checks(args):
    from dataset.demo import ensure_demo_data
    with tempfile.TemporaryDirectory() as work:
        demo = ensure_demo_data(os.path.join(work, "demo"))
        check_precisions(work, demo, args.device, args.size, args.precision_steps)
        try:  # first run on a GPU with this check: a crash must not cost the other checks
            check_no_host_sync(work, demo, args.device, args.size)
        except Exception as exc:  # noqa: BLE001 - any failure is this check's, said as FAIL
            report("FAIL", "no host sync in a training step", f"{type(exc).__name__}: {exc}")
        ckpt, cfg = check_kill_and_resume(work, demo, args.device, args.size)
        check_eval_parity(ckpt, cfg, args.device)
        check_syncbn(args.device)
        check_cli(ckpt, cfg, args.device, args.size, work, demo)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda:0")
    p.add_argument("--size", type=int, default=128, help="image side of the training checks")
    p.add_argument("--precision-steps", type=int, default=100,
                   help="demo steps of each precision against fp32 (100)")
    p.add_argument("--bench", action="store_true", help="also print the throughput tables")
    p.add_argument("--bench-size", type=int, default=None, help="benchmark image side (299)")
    p.add_argument("--bench-batch", type=int, default=32)
    p.add_argument("--bench-steps", type=int, default=10)
    p.add_argument("--bench-parts", default=",".join(PARTS),
                   help=f"which tables, comma-separated (default all: {','.join(PARTS)})")
    p.add_argument("--no-checks", action="store_true",
                   help="the tables only (with --bench), e.g. for a second call on the same GPU")
    args = p.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: CUDA is not available here (use --device cpu for the dry run)",
              file=sys.stderr)
        return 2
    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"device: {args.device} ({card})"
          f", torch {torch.__version__}", flush=True)
    parts = [part for part in args.bench_parts.split(",") if part]
    if set(parts) - set(PARTS):
        print(f"error: --bench-parts: unknown {', '.join(sorted(set(parts) - set(PARTS)))} "
              f"(known: {', '.join(PARTS)})", file=sys.stderr)
        return 2
    if not args.no_checks:
        run_checks(args)
    if args.bench:
        from benchmarks.gpu import bench
        bench(args.device, args.bench_size or 299, args.bench_batch, args.bench_steps, parts)
    failed = RESULTS.count("FAIL")
    print(f"{RESULTS.count('PASS')} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
