"""Face crops from videos into the folders the dataset loaders read: the library behind
tools/extract_faces.py (and tools/robustness.py's frames protocol).

``extract`` writes ``<out>/<video id>/<frame:04d>.png`` (or ``.jpg``) for the chosen frames of each
video (``faces.video``): the largest face, then followed across the video's frames, cropped with
the training data's crop (``faces.crop``); videos run in parallel worker processes; a finished
video gets a marker written atomically after its last frame and is skipped on the next run, an
interrupted one is redone, a broken one is reported and skipped. Beside the crops go
``manifest.jsonl`` and ``manifest_meta.json`` (``faces.manifest``); ``recrop`` re-crops exactly the
frames and rectangles of a manifest from another copy of the videos, without a detector.

Nothing of the user's is deleted: a video's output folder is made here and marked as this
project's own (``.extracting`` while at work, ``.done`` when finished); only such a folder's own
frame files are ever removed (to redo an interrupted video), and a folder of that name that was not
made here is left alone, the video reported as failed. Errors about the output folder start with
``out``, about the manifest with ``manifest`` (``UserError.arg``).
"""
import json
import logging
import multiprocessing as mp
import os
import signal

import cv2
import torch
from tqdm import tqdm

from errors import UserError
from fileio import FolderLock, atomic_write_text, sha256_of
from version import project_version

from .crop import MARGIN, choose_face, crop_box, cut
from .detectors import build_face_detector
from .detectors.retinaface import backbone_of
from .manifest import (DONE, FRAME_FILE, VIDEO_MANIFEST, WORKING, read_manifest, write_manifest,
                       write_meta)
from .video import FRAMES, iter_frames, list_videos, read_frames, video_id

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
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _DETECTOR = build_face_detector(**detector_args)


def _init_worker(detector_args):
    """A pool worker: Ctrl-C reaches the main process only, which stops with one line."""
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
        return vid, "failed", 0, len(records), "video missing from the source videos"
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
        backbone = backbone_of(weights, detector_args.get("backbone"))
    policy = f"every {every}" if every else (f"{frames} evenly spaced" if frames else "all")
    return {"detector": detector, "backbone": backbone,
            "weights": os.path.basename(weights) if weights else None,
            "weights_sha256": sha256_of(weights) if weights and os.path.isfile(weights) else None,
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


def extract(videos, out, detector_args, frames=FRAMES, every=None, margin=MARGIN, size=None,
            workers=1, progress=True, fmt="png", quality=95, shard=False):
    """Run over ``videos``; returns the summary counts. Writes ``manifest_meta.json`` first and
    ``manifest.jsonl`` (every finished video of ``out``) last. ``shard``: one shard of a sharded
    run (``faces.shard``), which holds its own lock and leaves ``manifest.jsonl`` to the merge."""
    opts = {"frames": frames, "every": every, "margin": margin, "size": size, "format": fmt,
            "quality": quality}
    return _run_into(out, crop_settings(detector_args, frames, every, margin, size, fmt, quality),
                     process_video, [(v, out, opts) for v in videos], workers, detector_args,
                     progress, "no_face", shard)


def _run_into(out, meta, func, jobs, workers, detector_args, progress, missed_key, shard=False):
    """The metadata first, the jobs, then the manifest of every finished video in ``out`` (also
    after an interruption; not for a ``shard``). Returns the summary counts."""
    os.makedirs(out, exist_ok=True)
    if shard:
        write_meta(out, meta)
        summary = {"done": 0, "skipped": 0, "failed": 0, "frames": 0, missed_key: 0}
        return _run_jobs(func, jobs, workers, detector_args, progress, summary, missed_key)
    lock = FolderLock(out, "out")  # two runs into one folder would claim the same videos
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
    """Re-crop exactly the frames and boxes of the ``manifest`` file from the videos of ``source``
    (a folder or list file, matched by video id). Returns the summary counts."""
    by_video, meta = read_manifest(manifest)
    try:
        videos = {video_id(v): v for v in list_videos(source, list_file=True, distinct_ids=True)}
    except UserError:
        videos = {}
    new_meta = dict(meta, from_manifest=os.path.abspath(manifest),
                    project_version=project_version(), opencv_version=cv2.__version__)
    opts = {"size": meta.get("size"), "quality": meta.get("quality", 95)}
    jobs = [(videos.get(vid), out, opts, recs) for vid, recs in sorted(by_video.items())]
    return _run_into(out, new_meta, recrop_video, jobs, workers, None, progress, "not_reproduced")
