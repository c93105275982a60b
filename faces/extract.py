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
import math
import multiprocessing as mp
import os
import signal

import cv2
import numpy as np
import torch
from tqdm import tqdm

from errors import UserError
from fileio import FolderLock, atomic_write_array, atomic_write_text, sha256_of
from version import project_version

from .crop import MARGIN, cut
from .finders import build_face_finder
from .finders.retinaface import backbone_of
from .manifest import (
    DONE,
    FRAME_FILE,
    LANDMARK_FILE,
    VIDEO_MANIFEST,
    WORKING,
    frame_folder,
    frame_name,
    landmark_folder,
    read_manifest,
    state_folder,
    write_manifest,
    write_meta,
)
from .rules import DFB_SIZE, RULES, build_rule
from .video import FRAMES, iter_frames, list_videos, read_frames, video_id

log = logging.getLogger("extract_faces")


def _write_image(path, rgb, quality=95):
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if path.endswith(".jpg") else []
    ok, buf = cv2.imencode(os.path.splitext(path)[1], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise IOError(f"cannot encode {path}")
    buf.tofile(path)


_DETECTOR = None
_RULES = {}


def _init_detector(detector_args):
    global _DETECTOR
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _DETECTOR = build_face_finder(**detector_args)


def _init_worker(detector_args):
    """A pool worker: Ctrl-C reaches the main process only, which stops with one line."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if detector_args:
        _init_detector(detector_args)


def _rule(opts):
    """The crop rule of ``opts``, built once per process (a shape predictor loads once)."""
    key = (opts["rule"], opts["margin"], opts["size"], opts.get("landmarks"))
    if key not in _RULES:
        _RULES[key] = build_rule(*key)
    return _RULES[key]


def _own_files(folder, pattern):
    return [n for n in os.listdir(folder) if pattern.fullmatch(n)] if os.path.isdir(folder) else []


def _claim(out, vid, layout):
    """Make the video's folders this tool's, or say why not. An interrupted earlier run's video
    (marked ``.extracting``) loses only its own frame (and landmark) files."""
    state, frames = state_folder(out, vid, layout), frame_folder(out, vid, layout)
    landmarks = landmark_folder(out, vid) if layout == "deepfakebench" else None
    if os.path.isfile(os.path.join(state, WORKING)):
        for folder, pattern in ((frames, FRAME_FILE), (landmarks, LANDMARK_FILE)):
            for name in _own_files(folder, pattern) if folder else ():
                os.remove(os.path.join(folder, name))  # files of the interrupted run
    else:
        for folder in {state, frames} | ({landmarks} if landmarks else set()):
            if os.path.exists(folder) and not os.path.isdir(folder):
                return f"the output path {folder} exists and is not a folder"
            if os.path.isdir(folder) and os.listdir(folder):
                return (f"the output folder {folder} exists and was not made by extract_faces; "
                        "rename or remove it")
    for folder in (state, frames) + ((landmarks,) if landmarks else ()):
        os.makedirs(folder, exist_ok=True)
    open(os.path.join(state, WORKING), "w").close()
    return None


def frames_for(label_counts, index):
    """The frames of the ``index``-th video of its label when a label asks for ``n`` per video
    (a fraction spreads evenly: 12.5 gives 12, 13, 12, 13, ...)."""
    return math.floor((index + 1) * label_counts) - math.floor(index * label_counts)


def process_video(job):
    """One video -> its face crops. Returns (video id, status, frames written, frames without face,
    error)."""
    path, out, opts = job
    vid = video_id(path)
    if not os.path.isfile(path) or vid in ("", ".", ".."):
        return path, "failed", 0, 0, "not a video file"
    layout = opts.get("layout", "folders")
    state = state_folder(out, vid, layout)
    if os.path.isfile(os.path.join(state, DONE)):
        return vid, "skipped", 0, 0, ""
    rule = _rule(opts)
    info = {}
    try:
        frames = read_frames(path, opts["frames"], opts["every"], info,
                             choose=lambda total: rule.frame_indices(total, opts["frames"],
                                                                     opts["every"]))
    except Exception as exc:  # noqa: BLE001 - any decoding problem: skip the video
        return vid, "failed", 0, 0, str(exc)
    problem = _claim(out, vid, layout)
    if problem:
        return vid, "failed", 0, 0, problem
    missed = 0
    previous = None
    records = []
    for index, t, rgb in frames:
        faces = rule.faces(rule.detect(_DETECTOR, rgb), previous if rule.tracked else None)
        piece = rule.cut(rgb, faces[0]) if faces else None
        if piece is None:  # no face, or (aligned rules) none found again in the aligned crop
            missed += 1
            continue
        face = faces[0]
        previous = face.box
        name = frame_name(index, opts["format"], layout)
        _write_image(os.path.join(frame_folder(out, vid, layout), name), piece.crop,
                     opts["quality"])
        file = (f"frames/{vid}/{name}" if layout == "deepfakebench" else f"{vid}/{name}")
        record = {"video": vid, "source": os.path.basename(path), "file": file,
                  "frame": index, "time": round(t, 6), "frames_total": info["total"],
                  "box": [round(float(v), 3) for v in face.box],
                  "crop": list(piece.rect) if piece.rect is not None else None,
                  "score": round(float(face.score), 6),
                  "landmarks": [[round(float(x), 3), round(float(y), 3)]
                                for x, y in face.landmarks] or None}
        if piece.warp is not None:
            record["warp"] = piece.warp
            record["keypoints"] = [[int(x), int(y)] for x, y in piece.keypoints]
        if piece.landmarks is not None:
            npy = os.path.join(landmark_folder(out, vid), os.path.splitext(name)[0] + ".npy")
            atomic_write_array(npy, piece.landmarks)
            record["landmarks_file"] = f"landmarks/{vid}/{os.path.basename(npy)}"
        records.append(record)
    _finish(state, records, missed)
    return vid, "done", len(records), missed, ""


def _finish(state, records, missed):
    """The video's manifest lines, then its done marker (both atomically); the working marker
    goes last."""
    atomic_write_text(os.path.join(state, VIDEO_MANIFEST),
                      "".join(json.dumps(r) + "\n" for r in records))
    atomic_write_text(os.path.join(state, DONE), f"{len(records)} {missed}\n")
    os.remove(os.path.join(state, WORKING))


def recrop_video(job):
    """One video of a manifest -> exactly its crops, from the user's copy of the video, without a
    detector (a rectangle cut, or an aligned crop's warp). Returns (video id, status, frames
    written, frames not reproduced, problem)."""
    path, out, opts, records = job
    vid = records[0]["video"]
    if path is None:
        return vid, "failed", 0, len(records), "video missing from the source videos"
    layout = opts.get("layout", "folders")
    state = state_folder(out, vid, layout)
    if os.path.isfile(os.path.join(state, DONE)):
        return vid, "skipped", 0, 0, ""
    info = {}
    try:
        wanted = [r["frame"] for r in records]
        frames = {idx: rgb for idx, _, rgb in iter_frames(path, indices=wanted, info=info)}
    except Exception as exc:  # noqa: BLE001 - any decoding failure fails this video alone
        return vid, "failed", 0, len(records), str(exc)
    expected = {r["frames_total"] for r in records}
    if expected != {info["total"]}:
        return vid, "failed", 0, len(records), (f"frame count differs: {info['total']} here, "
                                                f"{sorted(expected)[0]} in the manifest")
    problem = _claim(out, vid, layout)
    if problem:
        return vid, "failed", 0, len(records), problem
    done, problems = [], []
    for r in records:
        rgb = frames.get(r["frame"])
        if rgb is None:
            crop = None
        elif r.get("warp") is not None:
            side = opts["size"] or DFB_SIZE
            crop = cv2.warpAffine(rgb, np.array(r["warp"], np.float64), (side, side))
        else:
            crop = cut(rgb, r["crop"], opts["size"])
        if crop is None:
            problems.append(f"frame {r['frame']} " + ("could not be decoded" if rgb is None
                                                      else "does not hold the crop"))
            continue
        _write_image(os.path.join(out, r["file"]), crop, opts["quality"])
        done.append({k: v for k, v in r.items() if k != "landmarks_file"})
    _finish(state, done, len(problems))
    return vid, "done", len(done), len(problems), "; ".join(problems)


def crop_settings(detector_args, frames, every, margin, size, fmt, quality, rule="box",
                  landmarks=None, frames_real=None, frames_fake=None):
    """What decides the crops, as written to manifest_meta.json."""
    detector = detector_args.get("name")
    weights = detector_args.get("weights")
    backbone = None
    if detector == "retinaface":
        backbone = backbone_of(weights, detector_args.get("backbone"))
    policy = f"every {every}" if every else (f"{frames} evenly spaced" if frames else "all")
    if frames_real is not None or frames_fake is not None:
        policy = f"real {frames_real or frames}, fake {frames_fake or frames} per video"
    cut_by = _rule({"rule": rule, "margin": margin, "size": size, "landmarks": landmarks})
    if cut_by.aligned and frames and not every:
        policy += ", indices rounded down"
    return {"detector": detector, "backbone": backbone,
            "weights": os.path.basename(weights) if weights else None,
            "weights_sha256": sha256_of(weights) if weights and os.path.isfile(weights) else None,
            **cut_by.settings(),
            "margin": margin, "size": cut_by.size, "frames": policy, "format": fmt,
            "quality": quality, "face": FACE_CHOICE[rule],
            "project_version": project_version(), "opencv_version": cv2.__version__}


FACE_CHOICE = {
    "box": "the largest, then followed across frames (best overlap)",
    "recce": "the largest, then followed across frames (best overlap)",
    "ffpp": "the first face dlib returns, in every frame",
    "deepfakebench": "the largest face of every frame; a frame whose aligned crop holds no face "
                     "again is dropped",
}


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


def label_of(path):
    """A video's label by the folders of the published datasets' trees: ``real`` under
    original_sequences, Celeb-real, YouTube-real or a folder named real; ``fake`` under
    manipulated_sequences, Celeb-synthesis or a folder named fake; None otherwise."""
    parts = [p.lower() for p in os.path.normpath(os.path.abspath(path)).split(os.sep)[:-1]]
    for part in reversed(parts):
        if part in REAL_FOLDERS:
            return "real"
        if part in FAKE_FOLDERS:
            return "fake"
    return None


REAL_FOLDERS = {"original_sequences", "celeb-real", "youtube-real", "real", "original_videos",
                "source_videos"}
FAKE_FOLDERS = {"manipulated_sequences", "celeb-synthesis", "fake", "manipulated_videos",
                "method_a", "method_b"}


def per_label_frames(videos, frames, frames_real=None, frames_fake=None):
    """The frames of each video: ``frames_real`` / ``frames_fake`` for videos whose path says
    their label (``label_of``), fractions spread evenly over each label's videos in order;
    ``frames`` for the rest. A video whose label is asked for but cannot be told is an error."""
    if frames_real is None and frames_fake is None:
        return [frames] * len(videos)
    seen = {"real": 0, "fake": 0}
    out = []
    for v in videos:
        label = label_of(v)
        want = {"real": frames_real, "fake": frames_fake}.get(label)
        if label is None:
            raise UserError(f"frames_real: cannot tell whether {v} is real or fake from its "
                            "folders (original_sequences, manipulated_sequences, Celeb-real, "
                            "Celeb-synthesis, YouTube-real, real, fake): extract real and fake "
                            "videos in separate runs with --frames", arg="frames_real")
        if want is None:
            out.append(frames)
            continue
        out.append(max(1, frames_for(want, seen[label])))
        seen[label] += 1
    return out


def extract(videos, out, detector_args, frames=FRAMES, every=None, margin=MARGIN, size=None,
            workers=1, progress=True, fmt="png", quality=95, shard=False, rule="box",
            landmarks=None, frames_real=None, frames_fake=None, frames_of=None):
    """Run over ``videos``; returns the summary counts. Writes ``manifest_meta.json`` first and
    ``manifest.jsonl`` (every finished video of ``out``) last. ``rule``: the crop rule
    (``faces.rules``); ``landmarks``: its shape predictor file (aligned rules);
    ``frames_real`` / ``frames_fake``: frames per video by label (``per_label_frames``, over
    ``videos``; a shard is given ``frames_of``, each video's count over the whole run, so that
    its videos get the counts one process would give them).
    ``shard``: one shard of a sharded run (``faces.shard``), which holds its own lock and leaves
    ``manifest.jsonl`` to the merge."""
    cls = RULES[rule]
    opts = {"frames": frames, "every": every, "margin": margin, "size": size, "format": fmt,
            "quality": quality, "rule": rule, "landmarks": landmarks, "layout": cls.layout}
    if every:
        counts = [None] * len(videos)
    elif frames_of is not None:
        counts = [frames_of[v] for v in videos]
    else:
        counts = per_label_frames(videos, frames, frames_real, frames_fake)
    meta = crop_settings(detector_args, frames, every, margin, size, fmt, quality, rule,
                         landmarks, frames_real, frames_fake)
    jobs = [(v, out, dict(opts, frames=n) if n != frames else opts)
            for v, n in zip(videos, counts)]
    return _run_into(out, meta, process_video, jobs, workers, detector_args, progress, "no_face",
                     shard)


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
    opts = {"size": meta.get("size"), "quality": meta.get("quality", 95),
            "layout": meta.get("layout", "folders")}
    jobs = [(videos.get(vid), out, opts, recs) for vid, recs in sorted(by_video.items())]
    return _run_into(out, new_meta, recrop_video, jobs, workers, None, progress, "not_reproduced")
