"""Train RECCE from a YAML config.

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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Train RECCE.")
    parser.add_argument("--config", default="config/demo.yml", help="model config (YAML)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. config.optimizer.lr=1e-4 "
                             "(dataset branches: train_cfg.num_steps=500); repeatable")
    # torch.distributed.launch passes --local-rank=K (older releases --local_rank K)
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from errors import UserError, one_line
    from trainer.config import load_config, split_overrides

    try:
        model_opts, dataset_opts = split_overrides(args.opt)
        cfg = load_config(args.config, model_opts, dataset_opts)
        from trainer.train import run
        result = run(cfg, args.local_rank)
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the last checkpoint is intact; set config.resume: true to continue",
              file=sys.stderr)
        return 130
    from trainer import distributed as dist
    if dist.is_main() and result:
        history = result["history"]
        best_auc = max(history, key=lambda h: h[1]["AUC"]) if history else None
        if best_auc:
            print(f"best val AUC: {best_auc[1]['AUC']:.4f} (step {best_auc[0]})")
        if result["best_metric"] is not None and result["metric"] != "AUC":
            print(f"best val {result['metric']}: {result['best_metric']:.4f} "
                  f"(step {result['best_step']})")
        print(f"best checkpoint: {result['best_checkpoint']}")
    dist.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
