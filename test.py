"""Evaluate a checkpoint on the test branch of a config.

    python test.py --config path/to/config.yml            # config.id + config.ckpt pick the run
    python test.py --config C --ckpt runs/Recce/x/best_model_300.bin --device cpu
    torchrun --nproc_per_node=2 test.py --config C         # scores gathered across processes
    python test.py --config C --video_auc deepfakebench    # video level as DeepfakeBench groups it

Prints a table of frame- and video-level metrics (per manipulation method for FF++) and writes
metrics.json, scores.csv, and with both classes roc_curve.pickle, roc.png and reliability.png (into
the checkpoint's run directory, or --out). Then the calibration: ECE, Brier score and NLL of the raw
probabilities and, for a calibrated checkpoint, of the calibrated ones, and this split's FPR and TPR
at each operating point the checkpoint stores. The model is the one the checkpoint's saved config
names.
"""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py


def main(argv=None):
    from checks import BACKENDS, PRECISIONS
    parser = argparse.ArgumentParser(description="Evaluate a checkpoint on a benchmark split.")
    parser.add_argument("--config", required=True, help="model config (YAML)")
    parser.add_argument("--ckpt",
                        help="checkpoint file (default: <ckpt_fold>/<name>/<id>/<ckpt>.bin)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: config.device)")
    parser.add_argument("--out",
                        help="folder for metrics.json, scores.csv, roc_curve.pickle, roc.png")
    parser.add_argument("--trust", action="store_true",
                        help="allow a checkpoint that needs full unpickling (only from a trusted "
                             "source)")
    parser.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value (see train.py); repeatable")
    parser.add_argument("--perturb", action="append", default=[], metavar="TYPE:LEVEL",
                        help="score under a DeeperForensics distortion, e.g. GB:3 (the published "
                             "CS, CC, BW, GNC, GB, JPEG, VC; JQ; the variants BWS, JPEGB, GNCC; "
                             "levels 1-5); repeatable for a combination")
    parser.add_argument("--video_auc", "--video-auc", dest="video_auc",
                        choices=["project", "deepfakebench"], default="project",
                        help="the videos of the video-level metrics: project (default: each video "
                             "of the dataset, its frames' mean probability) or deepfakebench "
                             "(DeepfakeBench's: frames grouped by the name of their folder, so "
                             "same-named folders of different methods are one video, labelled "
                             "fake only when all its frames are; see docs/deepfakebench.md)")
    parser.add_argument("--threshold", default=None,
                        help="also report FPR, TPR and ACC at this threshold: a number, or an "
                             "operating point of the checkpoint's calibration (fpr@0.01, "
                             "fpr@0.05, fpr@0.1, eer: frames by the frame-level point, videos by "
                             "the video-level one), or two as an uncertain band a:b (the share of "
                             "uncertain verdicts is reported); the table's ACC stays the "
                             "original's, at 0.5 on the raw probability")
    parser.add_argument("--backend", default="torch", choices=BACKENDS,
                        help="what runs the forward (as inference.py's --backend)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (default), bf16, auto (as inference.py's --precision)")
    parser.add_argument("--local-rank", "--local_rank", dest="local_rank", type=int, default=None)
    args = parser.parse_args(argv)

    import logging
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from errors import flags, run_cli
    from trainer import distributed as dist
    from trainer.config import load_config, split_overrides
    from trainer.evaluation_report import format_calibration, format_table, run_test

    def body():
        from model.calibration import parse_threshold
        with flags(threshold="--threshold"):
            parse_threshold(args.threshold, typed=True)  # first: said before any work
        model_opts, dataset_opts = split_overrides(args.opt)
        cfg = load_config(args.config, model_opts, dataset_opts)
        from dataset.perturb import parse_spec
        with flags(perturbation="--perturb"):
            perturb = [parse_spec(p) for p in args.perturb]
        with flags(device="--device", out="--out", threshold="--threshold",
                   backend="--backend", precision="--precision"):
            metrics, path, out_dir, n, written = run_test(cfg, args.ckpt, args.device, args.out,
                                                          args.trust, perturb,
                                                          video_rule=args.video_auc,
                                                          threshold=args.threshold,
                                                          backend=args.backend,
                                                          precision=args.precision)
        if dist.is_main():
            print(f"checkpoint: {path}")
            print(f"dataset: {cfg['data']['name']} / {cfg['data']['test_branch']} ({n} images)"
                  + (f", perturbed: {' + '.join(args.perturb)}" if args.perturb else ""))
            if args.video_auc == "deepfakebench":
                print("video level: DeepfakeBench's videos (frames grouped by folder name; "
                      "label int(mean frame label))")
            print(format_table(metrics))
            print(format_calibration(metrics["calibration"]))
            print(f"written to {out_dir}: {', '.join(written)}")
        dist.cleanup()
    return run_cli(body, "interrupted: no output file was left half-written")


if __name__ == "__main__":
    sys.exit(main())
