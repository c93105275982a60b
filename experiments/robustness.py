"""Robustness to real-world degradations: the DeeperForensics-1.0 grid (the work of
``tools/robustness.py``).

``protocol="crops"`` (the default) distorts the face crops of the config's test split.
``protocol="frames"`` follows the published order, for users with the raw videos: the videos of
``videos`` (a CSV ``path,label``, 0 real / 1 fake) are cropped once clean (faces.extract, a crop
manifest), then each video is distorted whole and re-encoded as DeeperForensics-1.0's strictly
aligned path does (``dataset.perturb.distort_video``), and the same frames and rectangles are
re-cropped from it (the clean manifest) and scored.

Scores the test split clean, then under every distortion and level (dataset/perturb.py), one row
at a time; rows already in ``robustness.csv`` are not run again (resumable). Writes into the output
folder (default: ``robustness/`` beside the checkpoint) ``robustness.csv`` and ``robustness.md``
(frame and video AUC per distortion and level, the mean per distortion and overall, the drop from
clean) and ``robustness.png`` (AUC against level, one line per distortion).
"""
import copy
import csv
import json
import math
import os

from checks import check_value
from dataset.index import read_table_index
from dataset.perturb import LEVELS, distort_video, perturbation_rng
from errors import UserError, flags
from faces.extract import extract, recrop
from faces.finders import FACE_FINDERS
from faces.manifest import MANIFEST
from faces.video import video_id
from fileio import (
    atomic_write,
    atomic_write_figure,
    check_output_dir,
    file_identity,
    publish,
    read_table,
    same_work,
    temporary_beside,
    write_table,
)
from model.checkpoint import load_detector, pick_device
from trainer.config import branch, load_config, split_overrides
from trainer.evaluation_report import branch_spec, resolve_checkpoint, run_test

FIELDS = ["type", "level", "frame_AUC", "video_AUC", "frame_ACC", "images"]


def read_rows(path):
    """The finished rows of ``robustness.csv`` by (type, level); a file this tool did not write as
    it is (edited by hand, cut short, not UTF-8) is one error line, never half-read."""
    rows = read_table(path, FIELDS, numbers=("frame_AUC", "video_AUC", "frame_ACC"),
                      integers=("level",), what="a robustness.csv this tool wrote")
    return {(r["type"], int(r["level"])): r for r in rows}


def _f(value):
    return float("nan") if value in ("", None) else float(value)


def write_outputs(out, rows, types, levels):
    """robustness.csv, robustness.md and robustness.png from the rows so far (atomically)."""
    ordered = sorted(rows.values(),
                     key=lambda r: (r["type"] != "clean", r["type"], int(r["level"])))

    write_table(os.path.join(out, "robustness.csv"), ordered, FIELDS)
    clean = rows.get(("clean", 0))
    c_frame = _f(clean["frame_AUC"]) if clean else math.nan
    c_video = _f(clean["video_AUC"]) if clean else math.nan
    lines = [f"clean: frame AUC {c_frame:.4f}, video AUC {c_video:.4f}", "",
             "| distortion | " + " | ".join(f"level {lv}" for lv in levels) +
             " | mean | drop from clean |",
             "| --- |" + " --- |" * (len(levels) + 2)]
    means = []
    for t in types:
        cells, vals = [], []
        for lv in levels:
            r = rows.get((t, lv))
            if r:
                vals.append(_f(r["frame_AUC"]))
                cells.append(f"{_f(r['frame_AUC']):.4f} / {_f(r['video_AUC']):.4f}")
            else:
                cells.append("")
        mean = sum(vals) / len(vals) if vals else math.nan
        means += vals
        lines.append(f"| {t} | " + " | ".join(cells) + f" | {mean:.4f} | {c_frame - mean:.4f} |")
    overall = sum(means) / len(means) if means else math.nan
    lines += ["", f"mean frame AUC over every distortion and level: {overall:.4f} "
                  f"(drop from clean {c_frame - overall:.4f}); cells are frame / video AUC"]
    atomic_write(os.path.join(out, "robustness.md"), lambda fh: fh.write("\n".join(lines) + "\n"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for t in types:
        pts = [(lv, _f(rows[(t, lv)]["frame_AUC"])) for lv in levels if (t, lv) in rows]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=t)
    if clean:
        ax.axhline(c_frame, color="k", ls=":", lw=1, label=f"clean ({c_frame:.3f})")
    shown = [_f(r["frame_AUC"]) for r in rows.values() if _f(r["frame_AUC"]) == _f(r["frame_AUC"])]
    ax.set_ylim(min([0.5] + [v - 0.02 for v in shown]), 1.01)  # chance to perfect, clean inside
    ax.set_xlabel("severity level (1 mildest, 5 harshest; DeeperForensics-1.0's parameters)")
    ax.set_ylabel("frame AUC")
    ax.set_xticks(levels)
    ax.set_title("AUC under real-world distortions", fontsize=10)
    ax.legend(fontsize=8, ncol=3, loc="lower left")
    fig.tight_layout()
    atomic_write_figure(os.path.join(out, "robustness.png"), fig)
    return "\n".join(lines)


def read_video_list(path):
    """``[(video path, label)]`` from a CSV with header ``path,label`` (paths relative to it)."""
    base = os.path.dirname(os.path.abspath(path))
    out = []
    for row in read_table_index(path):
        video = row["path"] if os.path.isabs(row["path"]) else os.path.join(base, row["path"])
        if not os.path.isfile(video):
            raise UserError(f"--videos {path}: no such video: {video}")
        out.append((video, int(row["label"])))
    if not out:
        raise UserError(f"--videos {path}: no videos")
    return out


def frames_row(work, kind, level, videos, manifest, seed):
    """The crops of one grid cell under the published order: each video distorted whole (once;
    kept for a resumed run), then re-cropped with the clean crop manifest. Returns the folder."""
    cell = os.path.join(work, f"{kind}_{level}")
    vdir = os.path.join(cell, "videos")
    os.makedirs(vdir, exist_ok=True)
    for i, (video, _) in enumerate(videos):
        dst = os.path.join(vdir, video_id(video) + ".mp4")
        if os.path.isfile(dst):
            continue
        with temporary_beside(dst, suffix=".mp4") as tmp:
            distort_video(video, tmp, kind, level, perturbation_rng(seed, i, kind, level))
            publish(tmp, dst)
    crops = os.path.join(cell, "crops")
    recrop(manifest, vdir, crops, progress=False)
    return crops


def crops_index(crops, labels, path):
    """An ImageList index of the crops in ``crops`` (its manifest.jsonl): path, label, video."""
    rows = []
    with open(os.path.join(crops, MANIFEST), encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                if os.path.isfile(os.path.join(crops, r["file"])):
                    rows.append((os.path.join(crops, r["file"]), labels[r["video"]], r["video"]))

    def write(fh):
        w = csv.writer(fh)
        w.writerow(["path", "label", "video"])
        w.writerows(rows)
    atomic_write(path, write, newline="")
    return path


def frames_config(cfg, index):
    """The config scoring an index of crops with the test branch's transforms."""
    out = copy.deepcopy(cfg)
    out["dataset"] = {"frames_test": {"index": index,
                                      "transforms": branch(cfg, "test").get("transforms", [])}}
    out["data"].update(name="ImageList", test_branch="frames_test", val_branch="frames_test")
    return out


def robustness(args):
    """The grid for ``args``, tools/robustness.py's options: config, ckpt, device, out, types,
    levels, trust, opt, protocol (crops or frames), videos, detector, detector_weights, frames,
    margin. Raises UserError for a mistake the user can make (before any work, or with the
    finished rows kept)."""
    for t in args.types:
        if t.upper() not in LEVELS:
            raise UserError(f"--types: unknown distortion {t!r} (known: {', '.join(LEVELS)})")
    types = [t.upper() for t in args.types]
    if not args.levels or any(lv not in range(1, 6) for lv in args.levels):
        raise UserError(f"--levels {args.levels}: levels are 1 to 5")
    frames = args.protocol == "frames"
    if frames and not args.videos:
        raise UserError("--protocol frames needs --videos CSV (path,label of the raw videos)")
    if args.videos and not frames:
        raise UserError("--videos is for --protocol frames")
    if frames:
        check_value("--frames", args.frames, "frames")  # the bounds of inference.py's
        check_value("--margin", args.margin, "margin")
    cfg = load_config(args.config, *split_overrides(args.opt))
    ckpt = resolve_checkpoint(cfg, args.ckpt)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(ckpt)),
                                   "robustness_frames" if frames else "robustness")
    check_output_dir(out, "--out" if args.out else "output folder")
    device = pick_device(args.device or cfg["config"]["device"])
    model = load_detector(ckpt, device, model_cfg=cfg["model"],
                          trusted=args.trust or cfg["config"]["trust_checkpoint"],
                          fallback_spec=branch_spec(cfg))
    key = {"checkpoint": file_identity(ckpt), "data": cfg["data"]["name"],
           "test_branch": branch(cfg, "test"), "protocol": args.protocol,
           "seed": cfg["config"]["seed"],
           "videos": file_identity(args.videos) if frames else None,
           "faces": [args.detector, args.detector_weights, args.frames, args.margin]
           if frames else None}
    os.makedirs(out, exist_ok=True)  # checked above; the work starts here
    same_work(os.path.join(out, "robustness_key.json"), key,
              os.path.isfile(os.path.join(out, "robustness.csv")), f"--out {out}")
    rows = read_rows(os.path.join(out, "robustness.csv"))
    grid = [("clean", 0)] + [(t, lv) for t in types for lv in args.levels]
    if frames:
        with flags(face_detector="--detector"):
            FACE_FINDERS.get(args.detector)
        videos = read_video_list(args.videos)
        labels = {video_id(v): y for v, y in videos}
        work = os.path.join(out, "frames")
        clean = os.path.join(work, "clean")
        extract([v for v, _ in videos], clean, {"name": args.detector,
                                                "weights": args.detector_weights,
                                                "backbone": None, "device": "cpu"},
                args.frames, None, args.margin, progress=False)
        manifest = os.path.join(clean, MANIFEST)
    for kind, level in grid:
        if (kind, level) in rows:
            continue
        perturb = [] if kind == "clean" or frames else [(kind, level)]
        row_cfg = cfg
        if frames:
            crops = clean if kind == "clean" else frames_row(
                work, kind, level, videos, manifest, cfg["config"]["seed"])
            row_cfg = frames_config(cfg, crops_index(
                crops, labels, os.path.join(work, f"{kind}_{level}.csv")))
        metrics, _, _, n, _ = run_test(row_cfg, ckpt, str(device), os.path.join(
            out, "rows", f"{kind}_{level}"), perturb=perturb, model=model)
        rows[(kind, level)] = {"type": kind, "level": level, "frame_AUC": metrics["AUC"],
                               "video_AUC": metrics["video_AUC"], "frame_ACC": metrics["ACC"],
                               "images": n}
        print(f"{kind}:{level}  frame AUC {metrics['AUC']:.4f}  video AUC "
              f"{metrics['video_AUC']:.4f}", flush=True)
        write_outputs(out, rows, types, args.levels)  # after every row: resumable
    print(write_outputs(out, rows, types, args.levels))
    print(f"written to {out}: robustness.csv, robustness.md, robustness.png")
