"""inference.py on what users have: videos and ordinary photos, not only face crops.

Frames are sampled and decoded one at a time as tools/extract_faces.py samples them, faces are
detected (dlib or RetinaFace), followed across frames as tracks, and cropped with the crop of the
training data (``faces.crop.crop_face``, which tools/extract_faces.py uses), so a face scored
here and the same frame extracted then scored from a folder give the same probability. Crops of several frames are scored in one batch. A video's score is the
mean fake probability of a face track over its frames (as test.py's video-level metrics average);
the video is fake when any track seen in at least a quarter of the sampled frames is. A photo's
score is the highest of its faces.
"""
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from errors import UserError

from .crop import crop_face
from .tracking import Tracker
from .video import VIDEO_EXTS, iter_frames

MIN_TRACK_SHARE = 0.25
# The smallest detector score taken for a face, per detector. dlib's HOG scores: the real faces of
# the test photographs here (scikit-image's astronaut 1.16, down to 0.87 at a third of its size;
# matplotlib's Grace Hopper 1.27 to 1.41) against false boxes (the astronaut's mission patch 0.12 to
# 0.17, a name badge 0.02): 0.5 sits between them. RetinaFace: its release's own vis_thres, 0.6.
MIN_FACE_SCORE = {"dlib": 0.5, "retinaface": 0.6}
MIN_FACE_SIZE = 30  # pixels, the shorter side of the box: smaller ones give no usable crop


@dataclass
class Face:
    frame: int
    time: float
    track: int
    box: tuple
    det_score: float
    prob: float = float("nan")


@dataclass
class Result:
    path: str
    kind: str  # video or photo
    score: float | None = None
    fake: bool = False
    count: int = 0  # video: frames of the reported track; photo: faces
    tracks: int = 0
    sampled: int = 0
    faces: list = field(default_factory=list)
    error: str | None = None
    warning: str | None = None  # scored, but not all of it (a truncated video)
    track: int | None = None  # video: the main person's track, which the line reports
    persons: list = field(default_factory=list)  # video: (track, frames, mean prob) per person


def usable(dets, min_score, min_size):
    """The detections taken for faces: a detector score of at least ``min_score`` and a box whose
    shorter side has at least ``min_size`` pixels; the largest first."""
    keep = [d for d in dets if d.score >= min_score
            and min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_size]
    return sorted(keep, key=lambda d: -d.area)


def min_score_of(detector, min_score=None):
    return min_score if min_score is not None else \
        MIN_FACE_SCORE.get(getattr(detector, "name", ""), 0.0)


def list_videos(path):
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--video: no such file or folder: {path}")
    vids = sorted(os.path.join(path, f) for f in os.listdir(path)
                  if f.lower().endswith(VIDEO_EXTS) and os.path.isfile(os.path.join(path, f)))
    if not vids:
        raise UserError(f"--video {path}: no videos ({', '.join(VIDEO_EXTS)}, any case)")
    return vids


class Scorer:
    """Face crops -> fake probabilities, prepared by the detector's own input spec (the one its
    checkpoint was trained with), in batches."""

    def __init__(self, model, device, batch):
        from dataset.transforms import eval_transforms
        self.model, self.device, self.batch = model, device, batch
        self.transform = eval_transforms(model.spec)

    def __call__(self, crops, with_maps=False):
        probs, maps = [], []
        for i in range(0, len(crops), self.batch):
            x = torch.stack([self.transform(image=c)["image"] for c in crops[i:i + self.batch]])
            with torch.inference_mode():
                out = self.model.score(x.to(self.device), aux=with_maps)
            probs += out["prob"].cpu().tolist()
            if with_maps:
                maps += list((x - out["recons"].float().cpu()).abs().mean(1).numpy())
        return probs, maps


def score_video(path, detector, scorer, threshold, frames=32, every=None, margin=1.3, vis=None,
                max_pixels=None, min_score=None, min_size=MIN_FACE_SIZE):
    """One video -> a Result; frames are decoded, detected and cropped one at a time, crops scored
    in batches across frames (only a batch of frames is ever held). Detections below ``min_score``
    or ``min_size`` are not faces (``usable``). The verdict: see ``verdict``."""
    result = Result(path, "video")
    min_score = min_score_of(detector, min_score)
    tracker = Tracker()
    info = {}
    pending = []  # (frame index, time, rgb or None, [(Face, crop)])

    def flush():
        crops = [c for *_, faces in pending for _, c in faces]
        probs, maps = scorer(crops, with_maps=vis is not None and scorer.model.has_reconstruction)
        k = 0
        for idx, t, rgb, faces in pending:
            for face, _ in faces:
                face.prob = probs[k]
                if vis is not None:
                    vis.add_face(face, maps[k] if maps else None)
                k += 1
                result.faces.append(face)
            if vis is not None:
                vis.add_frame(idx, t, rgb, [f for f, _ in faces], threshold)
        pending.clear()

    try:
        for idx, t, rgb in iter_frames(path, frames, every, info=info, max_pixels=max_pixels):
            result.sampled += 1
            dets = usable(detector(rgb), min_score, min_size)
            faces = []
            for det, tid in zip(dets, tracker.assign(dets)):
                crop = crop_face(rgb, det.box, margin)
                if crop is not None:
                    faces.append((Face(idx, t, tid, tuple(det.box), det.score), crop))
            pending.append((idx, t, rgb if vis is not None else None, faces))
            if sum(len(f) for *_, f in pending) >= scorer.batch:
                flush()
        flush()
    except IOError as exc:
        result.error = str(exc)
        return result
    if result.sampled == 0:
        result.error = "no frame could be decoded"
        return result
    if info.get("decoded", 0) < info.get("wanted", 0):  # scored, and said: not the whole video
        result.warning = (f"only {info['decoded']} of the {info['wanted']} chosen frames could be "
                          f"decoded (the header says {info['total']} frames: a truncated file?)")
    verdict(result, threshold)
    return result


def verdict(result, threshold):
    """A video's verdict from its face tracks. A person is a track seen in at least a quarter of
    the sampled frames (every track, when none is); the main person is the one seen in the most
    frames (on a tie, the larger face). The video's line reports the main person's track: its mean
    fake probability over its frames, fake at ``threshold`` or above; every further person gets
    a line of its own (``persons``, most frames first)."""
    tracks = {}
    for face in result.faces:
        tracks.setdefault(face.track, []).append(face)
    result.tracks = len(tracks)
    if not tracks:
        return
    persons = {t: f for t, f in tracks.items() if len(f) >= MIN_TRACK_SHARE * result.sampled}
    pool = persons or tracks

    def size(faces):
        return float(np.mean([(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in faces]))
    order = sorted(pool, key=lambda t: (-len(pool[t]), -size(pool[t]), t))
    result.persons = [(t, len(pool[t]), float(np.mean([f.prob for f in pool[t]]))) for t in order]
    result.track, result.count, result.score = result.persons[0]
    result.fake = result.score >= threshold


def score_photo(path, detector, scorer, threshold, margin=1.3, max_pixels=None, vis=None,
                min_score=None, min_size=MIN_FACE_SIZE):
    """One photo -> a Result: every face detected (``usable``) and scored; the photo's score is
    the highest."""
    from dataset import read_rgb
    from dataset.base import DEFAULT_MAX_PIXELS
    result = Result(path, "photo", sampled=1)
    try:
        rgb = read_rgb(path, max_pixels or DEFAULT_MAX_PIXELS)  # EXIF orientation applied
    except UserError as exc:
        result.error = str(exc)
        return result
    dets = usable(detector(rgb), min_score_of(detector, min_score), min_size)
    faces, crops = [], []
    for i, det in enumerate(dets):
        crop = crop_face(rgb, det.box, margin)
        if crop is not None:
            faces.append(Face(0, 0.0, i, tuple(det.box), det.score))
            crops.append(crop)
    probs, _ = scorer(crops) if crops else ([], [])
    for face, p in zip(faces, probs):
        face.prob = p
    result.faces, result.count, result.tracks = faces, len(faces), len(faces)
    if faces:
        result.score = max(probs)
        result.fake = result.score >= threshold
    if vis is not None:
        vis.photo(rgb, faces, threshold)
    return result


def result_line(r, threshold=0.5):
    """The image line's first three fields, then the frame (video) or face (photo) count; a video
    with more than one person says which track each line reports, one line per person."""
    what = "frames" if r.kind == "video" else "faces"
    if r.score is None:
        return f"path: {r.path} \t\t| no face found \t| {what}: {r.sampled if r.kind == 'video' else 0}"
    line = (f"path: {r.path} \t\t| fake probability: {r.score:.4f} \t| prediction: "
            f"{'fake' if r.fake else 'real'} \t| {what}: {r.count}")
    if len(r.persons) < 2:
        return line
    lines = [f"{line} \t| track: {r.track}"]
    for track, frames, prob in r.persons[1:]:
        lines.append(f"path: {r.path} \t\t| fake probability: {prob:.4f} \t| prediction: "
                     f"{'fake' if prob >= threshold else 'real'} \t| frames: {frames} \t| "
                     f"track: {track}")
    return "\n".join(lines)


def record(r):
    """The ``--output`` row of a video or photo (the Python API's record)."""
    reason = r.error or (("no face found" if r.sampled else "no frame could be decoded")
                         if r.score is None else None)
    return {"path": r.path, "kind": r.kind, "fake_probability": r.score,
            "prediction": None if r.score is None else ("fake" if r.fake else "real"),
            "frames_or_faces": r.count, "tracks": r.tracks, "track": r.track,
            "persons": len(r.persons), "error": reason}


def face_records(r):
    """The ``--frames_output`` rows of a video or photo: one per scored face."""
    return [{"path": r.path, "frame": f.frame, "time": round(f.time, 3), "track": f.track,
             "x1": f.box[0], "y1": f.box[1], "x2": f.box[2], "y2": f.box[3],
             "detector_score": f.det_score, "fake_probability": f.prob} for f in r.faces]


def write_results(path, results):
    import csv
    import json

    from fileio import atomic_write
    rows = [record(r) for r in results]
    if path.lower().endswith(".json"):
        atomic_write(path, lambda fh: json.dump(rows, fh, indent=1))
        return

    def write(fh):
        w = csv.DictWriter(fh, list(rows[0]) if rows else ["path"])
        w.writeheader()
        for row in rows:
            w.writerow({k: ("" if v is None else (repr(v) if isinstance(v, float) else v))
                        for k, v in row.items()})
    atomic_write(path, write, newline="")


def write_frames(path, results):
    import csv

    from fileio import atomic_write

    def write(fh):
        w = csv.writer(fh)
        w.writerow(["path", "frame", "time", "track", "x1", "y1", "x2", "y2", "detector_score",
                    "fake_probability"])
        for r in results:
            for f in face_records(r):
                w.writerow([f["path"], f["frame"], f"{f['time']:.3f}", f["track"],
                            *[f"{f[k]:.1f}" for k in ("x1", "y1", "x2", "y2")],
                            f"{f['detector_score']:.4f}", repr(f["fake_probability"])])
    atomic_write(path, write, newline="")


def threshold_from(path):
    """The EER threshold that test.py measured (metrics.json)."""
    import json
    import math
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh).get("EER_threshold")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"--threshold_from {path}: not a metrics.json of test.py ({exc})") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"--threshold_from {path}: no finite EER_threshold in it (a split with one "
                        "class has none)")
    return float(value)


class Visualizer:
    """``--visualize`` for videos and photos, into ``out_dir`` (no window): per video
    ``<name>_timeline.png`` (fake probability over time per track, the threshold drawn) and
    ``<name>_annotated.mp4`` (every sampled frame, each face boxed in a colour by its score, the
    reconstruction-difference heat map of the first face inset where the model has one); per photo
    ``<name>_annotated.png``."""

    def __init__(self, out_dir, path, fps=5.0, name=None):
        os.makedirs(out_dir, exist_ok=True)
        self.base = os.path.join(out_dir, name or os.path.splitext(os.path.basename(path))[0])
        self.fps, self.writer, self.maps, self.points = fps, None, {}, {}

    @staticmethod
    def _draw(bgr, faces, threshold):
        import cv2
        for f in faces:
            color = (0, 0, 255) if f.prob >= threshold else (0, 200, 0)
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), color, 2)
            cv2.putText(bgr, f"#{f.track} {f.prob:.2f}", (x1, max(12, y1 - 4)),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)
        return bgr

    def add_face(self, face, diff_map):
        self.points.setdefault(face.track, []).append((face.time, face.prob))
        if diff_map is not None:
            self.maps[(face.frame, face.track)] = diff_map

    def add_frame(self, idx, t, rgb, faces, threshold):
        import cv2
        bgr = self._draw(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces, threshold)
        if faces and (faces[0].frame, faces[0].track) in self.maps:
            m = self.maps[(faces[0].frame, faces[0].track)]
            m = (np.clip(m / max(float(m.max()), 1e-6), 0, 1) * 255).astype(np.uint8)
            side = max(32, min(bgr.shape[:2]) // 4)
            bgr[:side, :side] = cv2.applyColorMap(cv2.resize(m, (side, side)), cv2.COLORMAP_JET)
        if self.writer is None:
            self.writer = cv2.VideoWriter(self.base + "_annotated.mp4",
                                          cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                          (bgr.shape[1], bgr.shape[0]))
        self.writer.write(bgr)

    def close(self, threshold):
        if self.writer is not None:
            self.writer.release()
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
        for track, pts in sorted(self.points.items()):
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"track {track}")
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
        ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("fake probability")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.base + "_timeline.png")
        plt.close(fig)

    def photo(self, rgb, faces, threshold):
        import cv2
        cv2.imwrite(self.base + "_annotated.png",
                    self._draw(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces, threshold))
