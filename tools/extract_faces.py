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
import json
import logging
import multiprocessing as mp
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once

import cv2  # noqa: E402

from errors import UserError, run_cli  # noqa: E402
from faces.crop import MARGIN, choose_face, crop_box, cut  # noqa: E402
from faces.manifest import (DONE, FRAME_FILE, VIDEO_MANIFEST, WORKING, read_manifest,  # noqa: E402
                            write_manifest, write_meta)
from faces.video import iter_frames, list_videos, read_frames, video_id  # noqa: E402
from fileio import FolderLock  # noqa: E402
from tools import sha256_of as _sha256  # noqa: E402
from version import project_version  # noqa: E402

log = logging.getLogger("extract_faces")


def _write_image(path, rgb, quality=95):
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.endswith(".jpg") else []
    ok, buf = cv2.imencode(os.path.splitext(path)[1], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise IOError(f"cannot encode {path}")
    buf.tofile(path)


_DETECTOR = None


def _init_detector(detector_args):
    global _DETECTOR
    import torch
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from faces.detectors import build_face_detector
    _DETECTOR = build_face_detector(**detector_args)


def _init_worker(detector_args):
    """A pool worker: Ctrl-C reaches the main process only, which stops with one line."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if detector_args:
        _init_detector(detector_args)


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


def crop_settings(detector_args, frames, every, margin, size, fmt, quality):
    """What decides the crops, as written to manifest_meta.json."""
    detector = detector_args.get("name")
    weights = detector_args.get("weights")
    backbone = None
    if detector == "retinaface":
        from faces.detectors.retinaface import backbone_of
        backbone = backbone_of(weights, detector_args.get("backbone"))
    policy = f"every {every}" if every else (f"{frames} evenly spaced" if frames else "all")
    return {"detector": detector, "backbone": backbone,
            "weights": os.path.basename(weights) if weights else None,
            "weights_sha256": _sha256(weights) if weights and os.path.isfile(weights) else None,
            "margin": margin, "size": size, "frames": policy, "format": fmt, "quality": quality,
            "face": "the largest, then followed across frames (best overlap)",
            "project_version": project_version(), "opencv_version": cv2.__version__}


def _run_jobs(func, jobs, workers, detector_args, progress, summary, missed_key):
    if workers > 1:
        init = (_init_worker, (detector_args,))
        pool = mp.get_context("spawn").Pool(workers, *init)
        results = pool.imap_unordered(func, jobs)
    else:
        if detector_args:
            _init_detector(detector_args)
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
    except BaseException:
        if pool:  # interrupted: the workers stop now (their unfinished videos are redone later)
            pool.terminate()
        raise
    finally:
        if pool:
            pool.close()
            pool.join()
    return summary


def extract(videos, out, detector_args, frames=32, every=None, margin=MARGIN, size=None, workers=1,
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
    lock = FolderLock(out, "--out")  # two runs into one folder would claim the same videos
    try:
        return _run_locked(out, meta, func, jobs, workers, detector_args, progress, missed_key)
    finally:
        lock.release()


def _run_locked(out, meta, func, jobs, workers, detector_args, progress, missed_key):
    write_meta(out, meta)
    summary = {"done": 0, "skipped": 0, "failed": 0, "frames": 0, missed_key: 0}
    try:
        return _run_jobs(func, jobs, workers, detector_args, progress, summary, missed_key)
    finally:
        write_manifest(out)


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
    import math
    if not (args.margin > 0 and math.isfinite(args.margin)):
        raise UserError(f"--margin {args.margin}: expected a positive number (1.3 is usual)")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: is a file, expected a folder")


def main(argv=None):
    p = argparse.ArgumentParser(description="Crop faces from videos.")
    p.add_argument("--input", required=True, help="a folder of videos or a text file of paths")
    p.add_argument("--out", required=True, help="writes <out>/<video id>/<frame:04d>.png")
    p.add_argument("--detector", default="dlib", help="face detector: dlib (default) or retinaface")
    p.add_argument("--weights", help="retinaface: mobilenet0.25_Final.pth or Resnet50_Final.pth")
    p.add_argument("--backbone", choices=["mobilenet0.25", "resnet50"],
                   help="retinaface: default from the weights file name")
    p.add_argument("--device", default="cpu", help="retinaface: cpu or cuda:0")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=int, default=32, help="N evenly spaced frames per video")
    group.add_argument("--every", type=int, help="every k-th frame")
    group.add_argument("--all", action="store_true", help="every frame")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help="crop side = margin x the box's longer side (1.3)")
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
    from faces.detectors import FACE_DETECTORS

    def body():
        check_arguments(args)
        FACE_DETECTORS.get(args.detector)
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
                from faces.detectors.retinaface import (RetinaFaceNet, backbone_of,
                                                        load_retinaface_weights)
                load_retinaface_weights(RetinaFaceNet(backbone_of(args.weights, args.backbone)),
                                        args.weights)
            s = extract(videos, args.out, detector_args, None if args.all else args.frames,
                        args.every, args.margin, args.size, args.workers,
                        progress=sys.stderr.isatty(), fmt=args.format, quality=args.quality)
            missed = ("frames without a face", s["no_face"])
        print(f"videos: {s['done']} done, {s['skipped']} already done, {s['failed']} failed; "
              f"frames written: {s['frames']}, {missed[0]}: {missed[1]} "
              f"({time.time() - start:.0f} s)")
        return 1 if s["failed"] or s.get("not_reproduced") else 0
    return run_cli(body, "interrupted: finished videos are kept (marked .done); run the same "
                         "command again to continue")


if __name__ == "__main__":
    sys.exit(main())
