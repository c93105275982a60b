"""Crop faces from videos into the folders the dataset loaders read.

    python tools/extract_faces.py --input FF++/original_sequences/youtube/c23/videos \
        --out FF++/original_sequences/youtube/c23/images --frames 50 --detector retinaface \
        --weights Resnet50_Final.pth
    python tools/extract_faces.py --input videos.txt --out faces --detector dlib --every 10

Writes ``<out>/<video id>/<frame:04d>.png`` (or ``.jpg`` with ``--format jpg --quality Q``, which
decodes several times faster when training at GPU speed; the loaders read either) (the video id is the file name without extension, the
frame number that of the video). Frames: N evenly spaced (``--frames``, default 32), every k-th
(``--every``) or all (``--all``). Face: the largest, then followed across the video's frames (the
detection that overlaps the previous face most). Crop: a square around the box scaled by
``--margin`` (default 1.3), clipped to the frame, optionally resized (``--size``). Videos run in
parallel worker processes. A finished video gets a marker written atomically after its last frame
and is skipped on the next run; an interrupted one is redone. A broken video is logged and skipped.

Beside the crops: ``manifest.jsonl`` (one line per crop: video, file, frame index, time, the
video's frame count, detector box, crop rectangle, detector score, landmarks where the detector
gives them) and ``manifest_meta.json`` (detector, backbone, weights sha256, margin, size, frames
policy, format, project and OpenCV versions). ``--from_manifest FILE --input VIDEOS --out DIR``
re-crops exactly those frames and rectangles from your own copy of the videos, without running a
detector, and reports every frame it cannot reproduce (video missing, frame count differs, frame
not decodable): a shared manifest gives the same crops where the video decoder agrees.

Nothing of the user's is deleted: a video's output folder is made by this tool and marked as its
own (``.extracting`` while at work, ``.done`` when finished); only such a folder's own frame files
are ever removed (to redo an interrupted video), and a folder of that name that the tool did not
make is left alone, the video reported as failed. Two videos whose names differ only by extension
would share one folder: refused before any work.
"""
import argparse
import hashlib
import json
import logging
import multiprocessing as mp
import os
import re
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from errors import UserError, one_line  # noqa: E402

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
DONE = ".done"
WORKING = ".extracting"
VIDEO_MANIFEST = ".manifest.jsonl"  # a video's lines of manifest.jsonl, in its own folder
MANIFEST = "manifest.jsonl"
MANIFEST_META = "manifest_meta.json"
# the settings that decide the crops: a folder holds crops of one setting only
CROP_SETTINGS = ("detector", "backbone", "weights_sha256", "margin", "size", "frames", "format",
                 "quality")
FRAME_FILE = re.compile(r"\d{4,}\.(png|jpg)")
log = logging.getLogger("extract_faces")


def list_videos(source):
    """A folder of videos (not recursive) or a text file of video paths, one per line."""
    if os.path.isdir(source):
        vids = [os.path.join(source, f) for f in os.listdir(source) if f.lower().endswith(VIDEO_EXTS)]
    elif os.path.isfile(source):
        with open(source) as fh:
            vids = [line.strip() for line in fh if line.strip()]
    else:
        raise UserError(f"--input: no such folder or list file: {source}")
    if not vids:
        raise UserError(f"--input {source}: no videos ({', '.join(VIDEO_EXTS)})")
    by_id = {}
    for v in sorted(vids):
        vid = video_id(v)
        if vid in by_id:
            raise UserError(f"--input: {by_id[vid]} and {v} would share the output folder {vid!r}; "
                            "rename one of them")
        by_id[vid] = v
    return sorted(vids)


def video_id(path):
    """The output folder name of a video: its file name without the extension."""
    return os.path.splitext(os.path.basename(os.path.normpath(path)))[0]


def frame_indices(total, frames=None, every=None):
    """Which frames to keep of ``total``: N evenly spaced, every k-th, or all."""
    if every:
        return list(range(0, total, every))
    if frames and frames < total:
        return sorted(set(np.linspace(0, total - 1, frames).round().astype(int).tolist()))
    return list(range(total))


def _count_frames(path):
    cap = cv2.VideoCapture(path)
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


def iter_frames(path, frames=None, every=None, indices=None, info=None):
    """The chosen frames of a video, decoded one at a time (grab every frame, retrieve only the
    chosen ones): (frame index, time in seconds, RGB). The header's frame count picks them; where it
    is missing, the frames are counted first. ``indices`` names the frames instead; ``info`` (a
    dict) receives the video's ``total`` frame count and ``fps``. Raises IOError when the video
    cannot be opened."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise IOError("cannot open the video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if total <= 0:
        total = _count_frames(path)
    if info is not None:
        info.update(total=total, fps=fps)
    wanted = set(frame_indices(total, frames, every) if indices is None else indices)
    idx = 0
    try:
        while wanted and idx <= max(wanted) and cap.grab():
            if idx in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    yield idx, (idx / fps if fps > 0 else 0.0), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            idx += 1
    finally:
        cap.release()


def read_frames(path, frames=None, every=None, info=None):
    """The chosen frames of a video, in order, as a list of (index, time, RGB)."""
    out = list(iter_frames(path, frames, every, info=info))
    if not out:
        raise IOError("no frame could be decoded")
    return out


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_face(detections, previous):
    """The largest face; once a face is chosen, the one overlapping it most (if any does)."""
    if not detections:
        return None
    if previous is not None:
        best = max(detections, key=lambda d: iou(d.box, previous))
        if iou(best.box, previous) > 0.2:
            return best
    return max(detections, key=lambda d: d.area)


def crop_box(box, height, width, margin):
    """A square of side max(w, h) * margin around the box centre, clipped to the frame."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * margin / 2
    return (max(0, int(round(cx - half))), max(0, int(round(cy - half))),
            min(width, int(round(cx + half))), min(height, int(round(cy + half))))


def crop_face(rgb, box, margin=1.3, size=None):
    """The crop of the training data: the square of ``crop_box`` (clipped to the frame),
    optionally resized to ``size`` (area); None when nothing is left of it. inference.py's video
    and photo modes crop with this same function."""
    return cut(rgb, crop_box(box, rgb.shape[0], rgb.shape[1], margin), size)


def cut(rgb, rect, size=None):
    """The pixels of ``rect`` (x1, y1, x2, y2), resized to ``size`` (area) if given; None when
    the rectangle holds no pixel of the frame."""
    x1, y1, x2, y2 = rect
    crop = rgb[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
    if crop.size == 0:
        return None
    if size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


def _write_image(path, rgb, quality=95):
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.endswith(".jpg") else []
    ok, buf = cv2.imencode(os.path.splitext(path)[1], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise IOError(f"cannot encode {path}")
    buf.tofile(path)


_DETECTOR = None


def _init_worker(detector_args):
    global _DETECTOR
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from tools.detectors import build_detector
    _DETECTOR = build_detector(**detector_args)


def _claim(target):
    """Make ``target`` this tool's folder for one video, or say why not. An interrupted earlier
    run's folder (marked ``.extracting``) loses only its own frame files."""
    if os.path.isdir(target):
        names = os.listdir(target)
        if WORKING in names:
            for name in names:
                if FRAME_FILE.fullmatch(name):
                    os.remove(os.path.join(target, name))  # frames of the interrupted run
        elif names:
            return (f"the output folder {target} exists and was not made by extract_faces; "
                    "rename or remove it")
    elif os.path.exists(target):
        return f"the output path {target} exists and is not a folder"
    os.makedirs(target, exist_ok=True)
    open(os.path.join(target, WORKING), "w").close()
    return None


def process_video(job):
    """One video -> its face crops. Returns (video id, status, frames written, frames without face,
    error)."""
    path, out, opts = job
    vid = video_id(path)
    if not os.path.isfile(path) or vid in ("", ".", ".."):
        return path, "failed", 0, 0, "not a video file"
    target = os.path.join(out, vid)
    if os.path.isfile(os.path.join(target, DONE)):
        return vid, "skipped", 0, 0, ""
    info = {}
    try:
        frames = read_frames(path, opts["frames"], opts["every"], info)
    except Exception as exc:  # noqa: BLE001 - any decoding problem: skip the video
        return vid, "failed", 0, 0, str(exc)
    problem = _claim(target)
    if problem:
        return vid, "failed", 0, 0, problem
    missed = 0
    previous = None
    records = []
    for index, t, rgb in frames:
        face = choose_face(_DETECTOR(rgb), previous)
        if face is None:
            missed += 1
            continue
        previous = face.box
        rect = crop_box(face.box, rgb.shape[0], rgb.shape[1], opts["margin"])
        crop = cut(rgb, rect, opts["size"])
        if crop is None:
            missed += 1
            continue
        name = f"{index:04d}.{opts['format']}"
        _write_image(os.path.join(target, name), crop, opts["quality"])
        records.append({"video": vid, "source": os.path.basename(path), "file": f"{vid}/{name}",
                        "frame": index, "time": round(t, 6), "frames_total": info["total"],
                        "box": [round(float(v), 3) for v in face.box], "crop": list(rect),
                        "score": round(float(face.score), 6),
                        "landmarks": [[round(float(x), 3), round(float(y), 3)]
                                      for x, y in face.landmarks] or None})
    _finish(target, records, missed)
    return vid, "done", len(records), missed, ""


def _finish(target, records, missed):
    """The video's manifest lines, then its done marker (both atomically); the working marker
    goes last."""
    from fileio import atomic_write_text
    atomic_write_text(os.path.join(target, VIDEO_MANIFEST),
                      "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(os.path.join(target, DONE), f"{len(records)} {missed}\n")
    os.remove(os.path.join(target, WORKING))


def recrop_video(job):
    """One video of a manifest -> exactly its crops, from the user's copy of the video, without a
    detector. Returns (video id, status, frames written, frames not reproduced, problem)."""
    path, out, opts, records = job
    vid = records[0]["video"]
    if path is None:
        return vid, "failed", 0, len(records), "video missing from --input"
    target = os.path.join(out, vid)
    if os.path.isfile(os.path.join(target, DONE)):
        return vid, "skipped", 0, 0, ""
    info = {}
    try:
        frames = {idx: rgb for idx, _, rgb in iter_frames(path, indices=[r["frame"] for r in records],
                                                          info=info)}
    except Exception as exc:  # noqa: BLE001
        return vid, "failed", 0, len(records), str(exc)
    expected = {r["frames_total"] for r in records}
    if expected != {info["total"]}:
        return vid, "failed", 0, len(records), (f"frame count differs: {info['total']} here, "
                                                f"{sorted(expected)[0]} in the manifest")
    problem = _claim(target)
    if problem:
        return vid, "failed", 0, len(records), problem
    done, problems = [], []
    for r in records:
        rgb = frames.get(r["frame"])
        crop = None if rgb is None else cut(rgb, r["crop"], opts["size"])
        if crop is None:
            problems.append(f"frame {r['frame']} " + ("could not be decoded" if rgb is None
                                                      else "does not hold the crop"))
            continue
        _write_image(os.path.join(out, r["file"]), crop, opts["quality"])
        done.append(r)
    _finish(target, done, len(problems))
    return vid, "done", len(done), len(problems), "; ".join(problems)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def project_version():
    """This project's version: the git commit of the checkout where there is one."""
    import subprocess
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    from tools import __version__
    return f"{__version__}+{commit}" if commit else __version__


def crop_settings(detector_args, frames, every, margin, size, fmt, quality):
    """What decides the crops, as written to manifest_meta.json."""
    detector = detector_args.get("name")
    weights = detector_args.get("weights")
    backbone = None
    if detector == "retinaface":
        from tools.detectors.retinaface import backbone_of
        backbone = backbone_of(weights, detector_args.get("backbone"))
    policy = f"every {every}" if every else (f"{frames} evenly spaced" if frames else "all")
    return {"detector": detector, "backbone": backbone,
            "weights": os.path.basename(weights) if weights else None,
            "weights_sha256": _sha256(weights) if weights and os.path.isfile(weights) else None,
            "margin": margin, "size": size, "frames": policy, "format": fmt, "quality": quality,
            "face": "the largest, then followed across frames (best overlap)",
            "project_version": project_version(), "opencv_version": cv2.__version__}


def write_meta(out, meta):
    """``manifest_meta.json`` in ``out``; a folder already holding crops of other settings is
    refused (one folder, one setting: a manifest must describe every crop in it)."""
    from fileio import atomic_write_text
    path = os.path.join(out, MANIFEST_META)
    if os.path.exists(path) or os.path.exists(os.path.join(out, MANIFEST)):
        try:
            with open(path, encoding="utf-8") as fh:
                old = json.load(fh)
            if not isinstance(old, dict) or "project_version" not in old:
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            raise UserError(f"--out {out} holds a {MANIFEST} or {MANIFEST_META} that this tool "
                            "did not write; move it away or use another --out") from None
        differs = [k for k in CROP_SETTINGS if old.get(k) != meta.get(k)]
        if differs:
            k = differs[0]
            raise UserError(f"--out {out} holds crops made with other settings ({k}: "
                            f"{old.get(k)!r} there, {meta.get(k)!r} now); use another --out")
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")


def write_manifest(out):
    """``manifest.jsonl``: the lines of every finished video folder of this tool in ``out``."""
    from fileio import atomic_write_text
    lines = []
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        part = os.path.join(folder, VIDEO_MANIFEST)
        if os.path.isfile(os.path.join(folder, DONE)) and os.path.isfile(part):
            with open(part, encoding="utf-8") as fh:
                lines += [line for line in fh if line.strip()]
    atomic_write_text(os.path.join(out, MANIFEST), "".join(lines))
    return len(lines)


def _run_jobs(func, jobs, workers, detector_args, progress, summary, missed_key):
    if workers > 1:
        init = (_init_worker, (detector_args,)) if detector_args else ()
        pool = mp.get_context("spawn").Pool(workers, *init)
        results = pool.imap_unordered(func, jobs)
    else:
        if detector_args:
            _init_worker(detector_args)
        pool, results = None, map(func, jobs)
    try:
        from tqdm import tqdm
        for vid, status, written, missed, err in tqdm(results, total=len(jobs), desc="videos",
                                                      disable=not progress):
            summary[status] += 1
            summary["frames"] += written
            summary[missed_key] += missed
            if status == "failed":
                log.warning("skipped video %s: %s", vid, err)
            elif err:
                log.warning("video %s: %s", vid, err)
    finally:
        if pool:
            pool.close()
            pool.join()
    return summary


def extract(videos, out, detector_args, frames=32, every=None, margin=1.3, size=None, workers=1,
            progress=True, fmt="png", quality=95):
    """Run over ``videos``; returns the summary counts. Writes ``manifest_meta.json`` first and
    ``manifest.jsonl`` (every finished video of ``out``) last."""
    opts = {"frames": frames, "every": every, "margin": margin, "size": size, "format": fmt,
            "quality": quality}
    return _run_into(out, crop_settings(detector_args, frames, every, margin, size, fmt, quality),
                     process_video, [(v, out, opts) for v in videos], workers, detector_args,
                     progress, "no_face")


def _run_into(out, meta, func, jobs, workers, detector_args, progress, missed_key):
    """The metadata first, the jobs, then the manifest of every finished video in ``out`` (also
    after an interruption). Returns the summary counts."""
    os.makedirs(out, exist_ok=True)
    write_meta(out, meta)
    summary = {"done": 0, "skipped": 0, "failed": 0, "frames": 0, missed_key: 0}
    try:
        return _run_jobs(func, jobs, workers, detector_args, progress, summary, missed_key)
    finally:
        write_manifest(out)


def read_manifest(path):
    """The lines of a ``manifest.jsonl`` grouped by video, and the ``manifest_meta.json`` beside
    it ({} where there is none)."""
    if not os.path.isfile(path):
        raise UserError(f"--from_manifest: no such file: {path}")
    by_video = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
                ok = (isinstance(r, dict) and isinstance(r.get("video"), str)
                      and isinstance(r.get("frame"), int) and isinstance(r.get("crop"), list)
                      and len(r["crop"]) == 4 and all(isinstance(v, int) for v in r["crop"])
                      and isinstance(r.get("frames_total"), int)
                      and isinstance(r.get("file"), str)
                      and r["file"].split("/")[0] == r["video"]
                      and len(r["file"].split("/")) == 2
                      and FRAME_FILE.fullmatch(r["file"].split("/")[1]) is not None
                      and "/" not in r["video"] and "\\" not in r["video"])
            except ValueError:
                ok = False
            if not ok or r["video"] in ("", ".", ".."):
                raise UserError(f"{path}:{n}: not a manifest line (video, frame, frames_total, "
                                "crop, file)")
            by_video.setdefault(r["video"], []).append(r)
    if not by_video:
        raise UserError(f"--from_manifest {path}: no lines")
    meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST_META)
    meta = {}
    if os.path.isfile(meta_path):
        from dataset.common import read_json
        meta = read_json(meta_path, "manifest metadata")
        if not isinstance(meta, dict):
            raise UserError(f"{meta_path}: expected a JSON object")
    return by_video, meta


def recrop(manifest, source, out, workers=1, progress=True):
    """Re-crop exactly the frames and boxes of ``manifest`` from the videos of ``source`` (a
    folder or list, matched by video id). Returns the summary counts."""
    by_video, meta = read_manifest(manifest)
    try:
        videos = {video_id(v): v for v in list_videos(source)}
    except UserError:
        videos = {}
    new_meta = dict(meta, from_manifest=os.path.abspath(manifest),
                    project_version=project_version(), opencv_version=cv2.__version__)
    opts = {"size": meta.get("size"), "quality": meta.get("quality", 95)}
    jobs = [(videos.get(vid), out, opts, recs) for vid, recs in sorted(by_video.items())]
    return _run_into(out, new_meta, recrop_video, jobs, workers, None, progress, "not_reproduced")


def check_arguments(args):
    for name in ("frames", "every", "size", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} {value}: expected a positive integer")
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: expected 1 to 100")
    if not args.margin > 0:
        raise UserError(f"--margin {args.margin}: expected a positive number (1.3 is usual)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: is a file, expected a folder")


def main(argv=None):
    p = argparse.ArgumentParser(description="Crop faces from videos.")
    p.add_argument("--input", required=True, help="a folder of videos or a text file of paths")
    p.add_argument("--out", required=True, help="writes <out>/<video id>/<frame:04d>.png")
    p.add_argument("--detector", choices=["dlib", "retinaface"], default="dlib")
    p.add_argument("--weights", help="retinaface: mobilenet0.25_Final.pth or Resnet50_Final.pth")
    p.add_argument("--backbone", choices=["mobilenet0.25", "resnet50"],
                   help="retinaface: default from the weights file name")
    p.add_argument("--device", default="cpu", help="retinaface: cpu or cuda:0")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=int, default=32, help="N evenly spaced frames per video")
    group.add_argument("--every", type=int, help="every k-th frame")
    group.add_argument("--all", action="store_true", help="every frame")
    p.add_argument("--margin", type=float, default=1.3, help="crop side = margin x the box's longer side")
    p.add_argument("--size", type=int, help="resize crops to size x size")
    p.add_argument("--format", choices=["png", "jpg"], default="png",
                   help="crop files: png (lossless, the default) or jpg")
    p.add_argument("--quality", type=int, default=95, help="jpg quality, 1 to 100 (default 95)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    p.add_argument("--from_manifest", metavar="FILE",
                   help="re-crop exactly the frames and boxes of a manifest.jsonl from the videos "
                        "of --input, without a detector (settings from the manifest_meta.json "
                        "beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        check_arguments(args)
        start = time.time()
        if args.from_manifest:
            s = recrop(args.from_manifest, args.input, args.out, args.workers,
                       progress=sys.stderr.isatty())
            missed = ("frames not reproduced", s["not_reproduced"])
        else:
            videos = list_videos(args.input)
            detector_args = {"name": args.detector, "weights": args.weights,
                             "backbone": args.backbone, "device": args.device}
            if args.detector == "retinaface":  # fail fast, before starting workers
                from tools.detectors.retinaface import (RetinaFaceNet, backbone_of,
                                                        load_retinaface_weights)
                load_retinaface_weights(RetinaFaceNet(backbone_of(args.weights, args.backbone)),
                                        args.weights)
            s = extract(videos, args.out, detector_args, None if args.all else args.frames,
                        args.every, args.margin, args.size, args.workers,
                        progress=sys.stderr.isatty(), fmt=args.format, quality=args.quality)
            missed = ("frames without a face", s["no_face"])
    except UserError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
    print(f"videos: {s['done']} done, {s['skipped']} already done, {s['failed']} failed; "
          f"frames written: {s['frames']}, {missed[0]}: {missed[1]} "
          f"({time.time() - start:.0f} s)")
    return 1 if s["failed"] or s.get("not_reproduced") else 0


if __name__ == "__main__":
    sys.exit(main())
