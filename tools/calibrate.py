r"""Calibrate any checkpoint: a temperature and operating points fitted on a validation split.

    python tools/calibrate.py --bin runs/Recce/<id>/best_model_150.bin \
        --config runs/Recce/<id>/config.yml
    python tools/calibrate.py --bin recce_ff.bin --config config/Recce.yml --branch val_cfg \
        --out recce_ff_cal.bin

Scores the frames of the dataset branch ``--branch`` (default: the config's ``data.val_branch``)
with the checkpoint (this project's, the original release's, a bare state dict or DeepfakeBench's;
prepared by its input spec), fits the temperature that minimises the negative log-likelihood of
their labels, chooses the operating points (``fpr@0.01``, ``fpr@0.05``, ``fpr@0.1``, ``eer``) on the
calibrated probabilities (``model.calibration``) and writes a NEW checkpoint file, by default
``<name>.calibrated<ext>`` beside the given one (``--out`` for another): the given file's contents
plus ``calibration`` (and, for a file that states neither, the input spec and the detector it was
scored with). The given file is never modified, and an existing file is never overwritten. A fit
that would mean nothing (one class, logits all equal, a temperature at the end of the search, TPR
0 at every operating point) is one error line, and nothing is written.
inference.py, test.py, the Python API and export read the new file like any other.
"""
import argparse
import logging
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from errors import UserError, flags, run_cli


def default_out(path):
    stem, ext = os.path.splitext(path)
    return f"{stem}.calibrated{ext or '.bin'}"


def check_out(path, out):
    """The new checkpoint's path: not the given file, not an existing file, in a folder that
    exists."""
    if os.path.abspath(out) == os.path.abspath(path):
        raise UserError(f"--out {out}: that is the checkpoint itself; calibration writes a new "
                        "file and never changes the given one")
    if os.path.exists(out):
        raise UserError(f"--out {out}: the file exists; remove it or give another --out")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise UserError(f"--out {out}: folder {folder} does not exist")
    return out


def stored_problem(state, path):
    """What is wrong with the calibration ``state`` (a checkpoint as read) holds, or None: a
    broken one is replaced, as any other (the given file keeps it)."""
    from model.checkpoint import stored_calibration
    try:
        stored_calibration(state, path)
    except UserError as exc:
        return str(exc)
    return None


def calibrated_checkpoint(state, calibration, det, model_cfg):
    """The checkpoint ``state`` (as read) with ``calibration``; a file that does not state its
    input spec or detector gets the ones it was calibrated with, so that it is scored the same
    way wherever it goes. A bare state dict is kept under ``state_dict``."""
    from model import DETECTORS
    out = dict(state) if any(not hasattr(v, "shape") for v in state.values()) \
        else {"state_dict": state}
    out["calibration"] = calibration.to_dict()
    if out.get("input_spec") is None and (out.get("config") or {}).get("dataset") is None:
        out["input_spec"] = det.spec.to_dict()
    if out.get("config") is None and model_cfg.get("name") in DETECTORS \
            and DETECTORS.get(model_cfg["name"]) is type(det):
        model = {k: v for k, v in model_cfg.items() if k != "pretrained"}
        model["num_classes"] = getattr(det, "num_classes", model.get("num_classes"))
        out["config"] = {"model": model}
    return out


def point_lines(cal):
    """Each stored point, frame level then video level: its threshold, its validation rates with
    their 95 % bounds and the samples they rest on, and whether the data supports it."""
    from model.calibration import supported
    levels = [("frame", cal.points, "frames"),
              ("video", cal.video["points"] if cal.video is not None else {}, "videos")]
    lines = []
    for level, points, unit in levels:
        if not points:
            why = cal.fitted_on.get("video_level", "not fitted")
            lines.append(f"  {level} level: none ({why})")
            continue
        lines.append(f"  {level} level:")
        for name, v in points.items():
            bound = (f" (95 % bound <= {v['fpr_upper']:.4f}), TPR {v['tpr']:.4f} (>= "
                     f"{v['tpr_lower']:.4f}) on {v['real']} real / {v['fake']} fake {unit}"
                     if v.get("fpr_upper") is not None else f", TPR {v['tpr']:.4f}")
            note = "" if supported(name, v) is not False else "  NOT SUPPORTED by the data"
            lines.append(f"    {name:<9} threshold {v['threshold']:.4f}  validation FPR "
                         f"{v['fpr']:.4f}{bound}{note}")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description="Fit a temperature and operating points on a "
                                            "validation split; write a calibrated checkpoint.")
    p.add_argument("--bin", "-b", required=True, help="the checkpoint to calibrate")
    p.add_argument("--config", required=True, help="a model config (YAML) whose dataset file has "
                                                   "the validation branch")
    p.add_argument("--branch", default=None,
                   help="the dataset branch to fit on (default: the config's data.val_branch)")
    p.add_argument("--out", default=None,
                   help="the new checkpoint (default: <name>.calibrated<ext> beside --bin)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: config.device)")
    p.add_argument("--trust", action="store_true",
                   help="allow a checkpoint that needs full unpickling (only from a trusted "
                        "source)")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value (see train.py); repeatable")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    def body():
        from model.calibration import fit
        from model.checkpoint import load_checkpoint, load_detector, pick_device
        from trainer.checkpoint import atomic_save
        from trainer.config import load_config, split_overrides
        from trainer.evaluation_report import branch_spec, score_split, test_branch
        if not os.path.isfile(args.bin):
            raise UserError(f"--bin {args.bin}: checkpoint not found")
        out = check_out(args.bin, args.out or default_out(args.bin))
        model_opts, dataset_opts = split_overrides(args.opt)
        cfg = load_config(args.config, model_opts, dataset_opts)
        name = args.branch or cfg["data"]["val_branch"]
        if name not in cfg["dataset"]:
            raise UserError(f"--branch {name!r}: {cfg['data']['file']} has no such branch (it "
                            f"has {', '.join(cfg['dataset'])})")
        with flags(device="--device", branch="--branch"):
            device = pick_device(args.device or cfg["config"]["device"])
            trusted = args.trust or cfg["config"]["trust_checkpoint"]
            state = load_checkpoint(args.bin, trusted=trusted)
            unreadable = stored_problem(state, args.bin)
            det = load_detector(args.bin, device, model_cfg=cfg["model"], trusted=trusted,
                                fallback_spec=branch_spec(cfg, name),
                                state={k: v for k, v in state.items() if k != "calibration"}
                                if unreadable else state)
            _, res = score_split(cfg, det, device, test_branch(cfg, det.spec, name))
        before = det.calibration
        try:
            cal = fit(res["label"], res["logit"], {"dataset": cfg["data"]["name"],
                                                   "branch": name,
                                                   "weights": "EMA" if det.uses_ema else "raw"},
                      videos=res["video"])
        except UserError as exc:  # a fit that would mean nothing: said, nothing written
            raise UserError(f"{args.bin} on {cfg['data']['name']} / {name}: {exc}; nothing "
                            "was written") from None
        atomic_save(calibrated_checkpoint(state, cal, det, cfg["model"]), out)
        if before is not None:
            print(f"replaced its calibration: {before.describe()}")
        elif unreadable:
            print(f"replaced its unreadable calibration ({unreadable})")
        print(f"calibration: {cal.describe()}")
        for line in point_lines(cal):
            print(line)
        print(f"written: {out}")
    return run_cli(body, "interrupted: no checkpoint was written")


if __name__ == "__main__":
    sys.exit(main())
