"""Crop manifests: ``manifest.jsonl`` (one line per crop) and ``manifest_meta.json`` (the settings
that made them) beside the crops of tools/extract_faces.py; read back to re-crop without a
detector."""
import json
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
                 "quality")
FRAME_FILE = re.compile(r"\d{4,}\.(png|jpg)")


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
    for name in sorted(os.listdir(out)):
        folder = os.path.join(out, name)
        part = os.path.join(folder, VIDEO_MANIFEST)
        if os.path.isfile(os.path.join(folder, DONE)) and os.path.isfile(part):
            with open(part, encoding="utf-8") as fh:
                lines += [line for line in fh if line.strip()]
    atomic_write_text(os.path.join(out, MANIFEST), "".join(lines))
    return len(lines)


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
                  and isinstance(r.get("frame"), int) and isinstance(r.get("crop"), list)
                  and len(r["crop"]) == 4 and all(isinstance(v, int) for v in r["crop"])
                  and isinstance(r.get("frames_total"), int)
                  and isinstance(r.get("file"), str)
                  and r["file"].split("/")[0] == r["video"]
                  and len(r["file"].split("/")) == 2
                  and FRAME_FILE.fullmatch(r["file"].split("/")[1]) is not None
                  and "/" not in r["video"] and "\\" not in r["video"]
                  and 0 <= r["frame"] < r["frames_total"]  # values a video can have
                  and 0 <= r["crop"][0] < r["crop"][2] and 0 <= r["crop"][1] < r["crop"][3])
        except ValueError:
            ok = False
        if not ok or r["video"] in ("", ".", ".."):
            raise UserError(f"{path}:{n}: not a manifest line (video, frame, frames_total, "
                            "crop, file)")
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
