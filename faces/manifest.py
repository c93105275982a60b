"""Crop manifests: ``manifest.jsonl`` (one line per crop) and ``manifest_meta.json`` (the settings
that made them) beside the crops of tools/extract_faces.py; read back to re-crop without a
detector. And where a video's files go, by layout: ``folders`` (``<out>/<video>/<frame:04d>.png``,
the video's markers and manifest lines in the same folder) or ``deepfakebench``
(``<out>/frames/<video>/<NNN>.png`` and ``<out>/landmarks/<video>/<NNN>.npy``, DeepfakeBench's
tree, whose tools take every file of a frame folder for a frame: the markers and manifest lines
live in ``<out>/.extract/<video>/``)."""
import json
import math
import os
import re

from dataset.common import read_json
from errors import UserError
from fileio import atomic_write_text

DONE = ".done"
WORKING = ".extracting"
VIDEO_MANIFEST = ".manifest.jsonl"  # a video's lines of manifest.jsonl, in its own folder
MANIFEST = "manifest.jsonl"
MANIFEST_META = "manifest_meta.json"
# the settings that decide the crops: a folder holds crops of one setting only
CROP_SETTINGS = ("detector", "backbone", "weights_sha256", "margin", "size", "frames", "format",
                 "quality", "crop_rule", "landmarks")
FRAME_FILE = re.compile(r"\d{3,}\.(png|jpg)")
LANDMARK_FILE = re.compile(r"\d{3,}\.npy")
STATE = ".extract"  # the deepfakebench layout's markers and manifest lines, per video


def layout_of(out):
    """The layout of an output folder, as its manifest_meta.json says (``folders`` when none)."""
    try:
        with open(os.path.join(out, MANIFEST_META), encoding="utf-8") as fh:
            meta = json.load(fh)
        return meta.get("layout", "folders") if isinstance(meta, dict) else "folders"
    except (OSError, ValueError, UnicodeDecodeError):
        return "folders"


def state_folder(out, vid, layout=None):
    """Where a video's markers and manifest lines are."""
    layout = layout or layout_of(out)
    return os.path.join(out, STATE, vid) if layout == "deepfakebench" else os.path.join(out, vid)


def frame_folder(out, vid, layout):
    return os.path.join(out, "frames", vid) if layout == "deepfakebench" else os.path.join(out, vid)


def landmark_folder(out, vid):
    return os.path.join(out, "landmarks", vid)


def frame_name(index, fmt, layout):
    """A crop's file name: the frame index, 4 digits (3 in DeepfakeBench's layout, as its own)."""
    return f"{index:03d}.{fmt}" if layout == "deepfakebench" else f"{index:04d}.{fmt}"


def video_of_file(file):
    """The video of a manifest line's ``file`` (``<video>/<name>`` or ``frames/<video>/<name>``),
    or None when the path is neither."""
    parts = file.split("/")
    if len(parts) == 2 and FRAME_FILE.fullmatch(parts[1]):
        return parts[0]
    if len(parts) == 3 and parts[0] == "frames" and FRAME_FILE.fullmatch(parts[2]):
        return parts[1]
    return None


def write_meta(out, meta):
    """``manifest_meta.json`` in ``out``; a folder already holding crops of other settings is
    refused (one folder, one setting: a manifest must describe every crop in it). Errors about
    the folder start with ``out`` (``UserError.arg``)."""
    path = os.path.join(out, MANIFEST_META)
    if os.path.exists(path) or os.path.exists(os.path.join(out, MANIFEST)):
        try:
            with open(path, encoding="utf-8") as fh:
                old = json.load(fh)
            if not isinstance(old, dict) or "project_version" not in old:
                raise ValueError
        except (OSError, ValueError, UnicodeDecodeError):
            raise UserError(f"out {out} holds a {MANIFEST} or {MANIFEST_META} that this project "
                            "did not write: move it away or use another folder",
                            arg="out") from None
        differs = [k for k in CROP_SETTINGS if old.get(k) != meta.get(k)]
        if differs:
            k = differs[0]
            raise UserError(f"out {out} holds crops made with other settings ({k}: "
                            f"{old.get(k)!r} there, {meta.get(k)!r} now): use another folder",
                            arg="out")
    atomic_write_text(path, json.dumps(meta, indent=2) + "\n")


def write_manifest(out):
    """``manifest.jsonl``: the lines of every finished video folder of this tool in ``out``."""
    lines = []
    base = os.path.join(out, STATE) if layout_of(out) == "deepfakebench" else out
    for name in sorted(os.listdir(base)) if os.path.isdir(base) else ():
        folder = os.path.join(base, name)
        part = os.path.join(folder, VIDEO_MANIFEST)
        if os.path.isfile(os.path.join(folder, DONE)) and os.path.isfile(part):
            with open(part, encoding="utf-8") as fh:
                lines += [line for line in fh if line.strip()]
    atomic_write_text(os.path.join(out, MANIFEST), "".join(lines))
    return len(lines)


def _is_rect(crop):
    return (isinstance(crop, list) and len(crop) == 4 and all(isinstance(v, int) for v in crop)
            and 0 <= crop[0] < crop[2] and 0 <= crop[1] < crop[3])


def _is_warp(m):
    """A 2 x 3 affine matrix of finite numbers (an aligned crop's)."""
    return (isinstance(m, list) and len(m) == 2
            and all(isinstance(row, list) and len(row) == 3
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                            and math.isfinite(v) for v in row) for row in m))


def read_manifest(path):
    """The lines of a ``manifest.jsonl`` grouped by video, and the ``manifest_meta.json`` beside
    it ({} where there is none). A missing or empty file is an error that starts with
    ``manifest`` (``UserError.arg``)."""
    if not os.path.isfile(path):
        raise UserError(f"manifest {path}: no such file", arg="manifest")
    by_video = {}
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start}): not a manifest this tool "
                        "wrote") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            ok = (isinstance(r, dict) and isinstance(r.get("video"), str)
                  and isinstance(r.get("frame"), int) and isinstance(r.get("frames_total"), int)
                  and isinstance(r.get("file"), str) and video_of_file(r["file"]) == r["video"]
                  and "/" not in r["video"] and "\\" not in r["video"]
                  and 0 <= r["frame"] < r["frames_total"]  # values a video can have
                  and (_is_rect(r.get("crop")) if r.get("warp") is None
                       else _is_warp(r["warp"])))
        except ValueError:
            ok = False
        if not ok or r["video"] in ("", ".", ".."):
            raise UserError(f"{path}:{n}: not a manifest line (video, frame, frames_total, "
                            "crop or warp, file)")
        by_video.setdefault(r["video"], []).append(r)
    if not by_video:
        raise UserError(f"manifest {path}: no lines", arg="manifest")
    meta_path = os.path.join(os.path.dirname(os.path.abspath(path)), MANIFEST_META)
    meta = {}
    if os.path.isfile(meta_path):
        meta = read_json(meta_path, "manifest metadata")
        if not isinstance(meta, dict):
            raise UserError(f"{meta_path}: expected a JSON object")
        size, quality = meta.get("size"), meta.get("quality", 95)
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise UserError(f"{meta_path}: size {size!r} is not a positive number of pixels")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise UserError(f"{meta_path}: quality {quality!r} is not a JPEG quality 1 to 100")
    return by_video, meta
