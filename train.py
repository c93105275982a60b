"""Train RECCE (or any registered model) from a YAML config.

    python train.py                                  # the built-in demo (config/demo.yml)
    python train.py --config config/Recce.yml
    torchrun --nproc_per_node=4 train.py --config config/Recce.yml
    python -m torch.distributed.launch --nproc_per_node=4 --master_port 12345 train.py --config C
    python train.py --config C --opt config.optimizer.lr=1e-4 --opt data.num_workers=2
"""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# threads that wait for work sleep instead of spinning (set before torch loads OpenMP): on a
# machine shared with another busy process, spinning threads take the cores the work needs
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train RECCE.")
    parser.add_argument("--config", default="config/demo.yml", help="model config (YAML)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. config.optimizer.lr=1e-4 "
                             "(dataset branches: train_cfg.num_steps=500); repeatable")
    parser.add_argument("--threads", type=int, default=None,
                        help="intra-op threads of each training process (default: the cores it "
                             "may use, shared among the ranks of its machine, less one per loader "
                             "worker)")
    # torch.distributed.launch passes --local-rank=K (older releases --local_rank K)
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None)
    return parser.parse_args(argv)


def summary_lines(result):
    """The best validation AUC (NaN never counts) and the best checkpoint by config.metric."""
    import math
    lines = []
    scored = [(step, m["AUC"]) for step, m in result["history"] if not math.isnan(m["AUC"])]
    if scored:
        step, auc = max(scored, key=lambda h: (h[1], h[0]))
        lines.append(f"best val AUC: {auc:.4f} (step {step})")
    elif result["history"]:
        lines.append("best val AUC: undefined (the validation split has one class only, or no "
                     "readable image)")
    if result["best_metric"] is not None and result["metric"] != "AUC":
        lines.append(f"best val {result['metric']}: {result['best_metric']:.4f} "
                     f"(step {result['best_step']})")
    lines.append(f"best checkpoint: {result['best_checkpoint'] or 'none (no validation metric)'}")
    if result.get("calibration"):
        lines.append(f"calibrated: {result['calibration']}")
    elif result.get("uncalibrated"):
        lines.append(f"not calibrated: {result['uncalibrated']}")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    from errors import run_cli
    from trainer.config import load_config, split_overrides

    def body():
        if args.threads is not None:
            from checks import check_value
            check_value("--threads", args.threads, "threads")
        model_opts, dataset_opts = split_overrides(args.opt)
        cfg = load_config(args.config, model_opts, dataset_opts)
        from trainer.train import Interrupted, run
        try:
            # from here the trainer stops between steps
            result = run(cfg, args.local_rank, args.threads)
        except Interrupted as exc:
            print(str(exc), file=sys.stderr)
            return 128 + int(exc.signum)
        from trainer import distributed as dist
        if dist.is_main() and result:
            print(summary_lines(result))
        dist.cleanup()
    return run_cli(body, "interrupted: the last checkpoint is intact; continue with --opt "
                         "config.resume=true")


if __name__ == "__main__":
    sys.exit(main())
