"""Video decoding for the face pipeline: which videos, which frames, decoded one at a time."""
import os

os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once

import cv2
import numpy as np

from checks import MAX_FRAMES
from errors import UserError
from fileio import files_in

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FRAMES = 32  # evenly spaced frames taken of a video unless said otherwise


def list_videos(source, list_file=False, distinct_ids=False):
    """The videos of ``source``: the video files directly in a folder (by extension, any case;
    sorted), or a file: with ``list_file``, a text file of video paths (one a line; sorted),
    else that one video. ``distinct_ids``: two videos of one ``video_id`` (a.mp4 and a.avi), which
    would share an output folder, are refused. Errors start with ``source`` (``UserError.arg``)."""
    if os.path.isdir(source):
        vids = files_in(source, VIDEO_EXTS)
    elif os.path.isfile(source) and list_file:
        with open(source) as fh:
            vids = sorted(line.strip() for line in fh if line.strip())
    elif os.path.isfile(source):
        vids = [source]
    else:
        what = "folder or list file" if list_file else "file or folder"
        raise UserError(f"source {source}: no such {what}", arg="source")
    if not vids:
        raise UserError(f"source {source}: no videos ({', '.join(VIDEO_EXTS)}, any case)",
                        arg="source")
    by_id = {}
    for v in vids if distinct_ids else ():
        vid = video_id(v)
        if vid in by_id:
            raise UserError(f"source: {by_id[vid]} and {v} would share the output folder {vid!r}; "
                            "rename one of them", arg="source")
        by_id[vid] = v
    return vids


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


MAX_HEADER_FRAMES = MAX_FRAMES  # 3.9 days at 30 fps: a header claiming more is not believed
DEFAULT_MAX_PIXELS = 64_000_000  # per frame, as for photos (dataset.base)


def iter_frames(path, frames=None, every=None, indices=None, info=None, max_pixels=None,
                choose=None):
    """The chosen frames of a video, decoded one at a time (grab every frame, retrieve only the
    chosen ones): (frame index, time in seconds, RGB). The header's frame count picks them; where it
    is missing, or claims more than ``MAX_HEADER_FRAMES``, the frames are counted first (a lying
    header costs one pass, not memory). ``indices`` names the frames instead; ``info`` (a dict)
    receives the video's ``total`` frame count, ``fps``, the number of chosen frames ``wanted`` and,
    once the iteration is over, how many were ``decoded`` (fewer: a truncated video). Raises
    IOError when the video cannot be opened or its frames have more than ``max_pixels`` pixels."""
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise IOError("cannot open the video")
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    budget = max_pixels or DEFAULT_MAX_PIXELS
    if w * h > budget:
        cap.release()
        raise IOError(f"its frames have {w} x {h} pixels, more than the limit of {budget} "
                      "(max_pixels)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    if total <= 0 or total > MAX_HEADER_FRAMES:
        total = _count_frames(path)
    if indices is not None:
        chosen = sorted(set(indices))
    else:
        chosen = choose(total) if choose is not None else frame_indices(total, frames, every)
    if info is not None:
        info.update(total=total, fps=fps, wanted=len(chosen), decoded=0)
    wanted, last = set(chosen), (max(chosen) if chosen else -1)
    idx = decoded = 0
    try:
        while idx <= last and cap.grab():
            if idx in wanted:
                ok, bgr = cap.retrieve()
                if ok:
                    decoded += 1
                    if info is not None:
                        info["decoded"] = decoded
                    yield idx, (idx / fps if fps > 0 else 0.0), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            idx += 1
    finally:
        cap.release()


def read_frames(path, frames=None, every=None, info=None, choose=None):
    """The chosen frames of a video, in order, as a list of (index, time, RGB)."""
    out = list(iter_frames(path, frames, every, info=info, choose=choose))
    if not out:
        raise IOError("no frame could be decoded")
    return out
