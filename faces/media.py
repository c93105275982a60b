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
from fileio import (atomic_write, atomic_write_figure, atomic_write_image, files_in, publish,
                    temporary_beside)
from model.detector import HEAT_MAX

from .crop import MARGIN, crop_face
from .tracking import Tracker
from .video import VIDEO_EXTS, iter_frames

MIN_TRACK_SHARE = 0.25
# The smallest detector score taken for a face, per detector. dlib's HOG scores: the real faces of
# the test photographs here (scikit-image's astronaut 1.16, down to 0.87 at a third of its size;
# matplotlib's Grace Hopper 1.27 to 1.41) against false boxes (the astronaut's mission patch 0.12 to
# 0.17, a name badge 0.02): 0.5 sits between them. RetinaFace: its release's own vis_thres, 0.6.
MIN_FACE_SCORE = {"dlib": 0.5, "retinaface": 0.6}
MIN_FACE_SIZE = 30  # pixels, the shorter side of the box: smaller ones give no usable crop
PROGRESS_EVERY = 30.0  # seconds between "scoring x.mp4: k of n frames" lines on stderr


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
    """inference.py's --video: one video file, or the videos directly in a folder."""
    if os.path.isfile(path):
        return [path]
    if not os.path.isdir(path):
        raise UserError(f"--video: no such file or folder: {path}")
    vids = files_in(path, VIDEO_EXTS)
    if not vids:
        raise UserError(f"--video {path}: no videos ({', '.join(VIDEO_EXTS)}, any case)")
    return vids


class Scorer:
    """Face crops -> fake probabilities, prepared by the detector's own input spec (the one its
    checkpoint was trained with), in batches."""

    def __init__(self, model, device, batch, forward=None):
        from dataset.transforms import eval_transforms
        self.model, self.device, self.batch = model, device, batch
        self.forward = forward or model.score  # (x, aux) -> scores; CUDA graphs on a GPU
        self.transform = eval_transforms(model.spec)

    def __call__(self, crops, with_maps=False):
        probs, maps = [], []
        for i in range(0, len(crops), self.batch):
            x = torch.stack([self.transform(image=c)["image"] for c in crops[i:i + self.batch]])
            with torch.inference_mode():
                out = self.forward(x.to(self.device), aux=with_maps)
            probs += out["prob"].cpu().tolist()
            if with_maps:
                maps += list((x - out["recons"].float().cpu()).abs().mean(1).numpy())
        return probs, maps


def score_video(path, detector, scorer, threshold, frames=32, every=None, margin=MARGIN, vis=None,
                max_pixels=None, min_score=None, min_size=MIN_FACE_SIZE):
    """One video -> a Result; frames are decoded, detected and cropped one at a time, crops scored
    in batches across frames (only a batch of frames is ever held). Detections below ``min_score``
    or ``min_size`` are not faces (``usable``). The verdict: see ``verdict``."""
    result = Result(path, "video")
    min_score = min_score_of(detector, min_score)
    tracker = Tracker()
    info = {}
    if vis is not None:
        vis.info = info  # the source's frame rate and length, for the annotated video
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

    import sys
    import time
    last = time.monotonic()
    try:
        for idx, t, rgb in iter_frames(path, frames, every, info=info, max_pixels=max_pixels):
            result.sampled += 1
            if time.monotonic() - last >= PROGRESS_EVERY:  # a long video says how far it is
                print(f"scoring {os.path.basename(path)}: {result.sampled} of {info['wanted']} "
                      "frames", file=sys.stderr, flush=True)
                last = time.monotonic()
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


def score_photo(path, detector, scorer, threshold, margin=MARGIN, max_pixels=None, vis=None,
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
    with_maps = vis is not None and scorer.model.has_reconstruction
    probs, maps = scorer(crops, with_maps=with_maps) if crops else ([], [])
    for face, p in zip(faces, probs):
        face.prob = p
    result.faces, result.count, result.tracks = faces, len(faces), len(faces)
    if faces:
        result.score = max(probs)
        result.fake = result.score >= threshold
    if vis is not None:
        vis.photo(rgb, faces, threshold, maps)
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


def _bgr_of(prob):
    """The colour of a fake probability on a fixed scale: green (real, 0) - yellow - red (fake, 1)."""
    from matplotlib import colormaps
    r, g, b, _ = colormaps["RdYlGn_r"](float(np.clip(prob, 0, 1)))
    return int(b * 255), int(g * 255), int(r * 255)


def _text(img, text, org, scale, color=(255, 255, 255), thickness=1):
    """Text legible on any background and at any resolution: outlined in black."""
    import cv2
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, text, org, font, scale, (0, 0, 0), thickness + 2 * max(1, thickness // 2 + 1),
                cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, color, thickness, cv2.LINE_AA)


def heat_map(diff_map, side, interpolation=None):
    """A reconstruction-difference map as a side x side BGR picture on the fixed scale
    (0 to ``HEAT_MAX``, jet); ``interpolation``: the cv2 flag of the resize (default linear)."""
    import cv2
    m = (np.clip(diff_map / HEAT_MAX, 0, 1) * 255).astype(np.uint8)
    flag = cv2.INTER_LINEAR if interpolation is None else interpolation
    return cv2.applyColorMap(cv2.resize(m, (side, side), interpolation=flag), cv2.COLORMAP_JET)


def heat_ramp(width, height):
    """The colour scale of ``heat_map``: 0 on the left, ``HEAT_MAX`` on the right."""
    import cv2
    return cv2.applyColorMap(np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1)),
                             cv2.COLORMAP_JET)


class Visualizer:
    """``--visualize`` for videos and photos, into ``out_dir`` (no window). Per video
    ``<name>_annotated.mp4`` (H.264, browser-playable, as long as the source at its frame rate:
    each sampled frame shown until the next), every frame carrying the verdict and the time, each
    face boxed in its colour on a fixed real-to-fake scale with its track and probability, "no face"
    where none was found, the reconstruction-difference heat map of the main face inset with its
    fixed scale, a legend; and ``<name>_timeline.png`` (fake probability over time per track, the
    deciding track marked, the threshold drawn, no-face stretches shaded, titled with the file and
    the verdict). Per photo ``<name>_annotated.png``: the same boxes, each face's heat map beside
    it."""

    def __init__(self, out_dir, path, fps=None, name=None):
        os.makedirs(out_dir, exist_ok=True)
        self.path = path
        self.base = os.path.join(out_dir, name or os.path.splitext(os.path.basename(path))[0])
        self.maps, self.points, self.samples = {}, {}, []
        self.info = {}  # the video's total frames and fps, filled while it is decoded
        self.tmp = None

    # ----------------------------------------------------------------- drawing
    @staticmethod
    def _scale(img):
        return max(0.7, min(img.shape[:2]) / 450)

    def _draw_faces(self, bgr, faces):
        """Each face boxed in its colour with its track and probability; "no face" when none."""
        import cv2
        s = self._scale(bgr)
        thick = max(2, int(round(min(bgr.shape[:2]) / 200)))
        for f in faces:
            color = _bgr_of(f.prob)
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            cv2.rectangle(bgr, (x1, y1), (x2, y2), color, thick)
            _text(bgr, f"#{f.track} {f.prob:.2f}", (x1, max(int(24 * s), y1 - int(8 * s))),
                  0.7 * s, color, max(1, thick // 2))
        if not faces:
            _text(bgr, "no face", (int(14 * s), bgr.shape[0] // 2), 1.2 * s, (255, 255, 255), 2)
        return bgr

    def _panel(self, h, s, maps):
        """The side panel: the real-to-fake colour scale of the boxes, then each face's
        reconstruction-difference heat map (``maps``: [(title, map)]) with its fixed scale."""
        import cv2
        width = int(230 * s)
        panel = np.full((h, width, 3), 40, np.uint8)
        pad = int(10 * s)
        y = pad + int(16 * s)
        _text(panel, "box colour: p(fake)", (pad, y), 0.5 * s)
        y += int(8 * s)
        bw, bh = width - 2 * pad, int(12 * s)
        for i in range(bw):
            cv2.line(panel, (pad + i, y), (pad + i, y + bh), _bgr_of(i / max(bw - 1, 1)), 1)
        y += bh + int(16 * s)
        _text(panel, "0 real", (pad, y), 0.45 * s)
        _text(panel, "fake 1", (width - pad - int(62 * s), y), 0.45 * s)
        y += int(14 * s)
        side = width - 2 * pad
        for title, m in maps:
            if y + int(20 * s) + side + int(40 * s) > h:
                break
            y += int(20 * s)
            _text(panel, title, (pad, y), 0.45 * s)
            y += int(6 * s)
            panel[y:y + side, pad:pad + side] = heat_map(m, side)
            y += side
            ramp = heat_ramp(side, int(8 * s))
            panel[y + int(4 * s):y + int(4 * s) + ramp.shape[0], pad:pad + side] = ramp
            y += int(4 * s) + ramp.shape[0] + int(14 * s)
            _text(panel, "0", (pad, y), 0.4 * s)
            _text(panel, f"{HEAT_MAX:g}+", (pad + side - int(30 * s), y), 0.4 * s)
        return panel

    # ----------------------------------------------------------------- videos
    def add_face(self, face, diff_map):
        self.points.setdefault(face.track, []).append((face.time, face.prob))
        if diff_map is not None:
            self.maps[(face.frame, face.track)] = diff_map

    def add_frame(self, idx, t, rgb, faces, threshold):
        """A sampled frame, annotated now (the verdict is added when the video is done)."""
        import cv2
        import tempfile
        if self.tmp is None:
            self.tmp = tempfile.mkdtemp(prefix=".annotate-", dir=os.path.dirname(self.base) or ".")
        bgr = self._draw_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces)
        s = self._scale(bgr)
        maps = [(f"#{f.track} |face - recons.|", self.maps[(f.frame, f.track)]) for f in faces
                if (f.frame, f.track) in self.maps]
        bgr = np.hstack([bgr, self._panel(bgr.shape[0], s, maps)])
        path = os.path.join(self.tmp, f"{len(self.samples):06d}.png")
        cv2.imwrite(path, bgr)
        self.samples.append((t, bool(faces), path))

    def close(self, result, threshold):
        """Write the annotated video and the timeline, now that the verdict is known; the
        temporary frames (this tool's own folder) are removed."""
        try:
            if self.samples:
                self._write_video(result)
            self._timeline(result, threshold)
        finally:
            self.discard()

    def discard(self):
        """Remove our temporary folder of sampled frames (all that goes when the video could not
        be read)."""
        import shutil
        if self.tmp and os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp)  # our own temporary folder only

    def _verdict(self, result):
        if result.score is None:
            return "no face found"
        who = f", main track #{result.track}" if len(result.persons) > 1 else ""
        return f"{'FAKE' if result.fake else 'REAL'}  p(fake) {result.score:.2f}{who}"

    def _write_video(self, result):
        out = self.base + "_annotated.mp4"
        with temporary_beside(out, suffix=".mp4") as tmp:
            self._encode(tmp, out, result)
            publish(tmp, out)

    def _encode(self, tmp, out, result):
        """The sampled frames, each held until the next, with the verdict and the time, through
        ffmpeg (H.264) into the temporary file ``tmp`` (``out`` once it is complete)."""
        import subprocess

        import cv2

        from dataset.perturb import _ffmpeg
        fps = float(self.info.get("fps") or 0.0) or 25.0
        total = int(self.info.get("total") or 0)
        duration = total / fps if total else self.samples[-1][0] + 1.0 / fps
        first = cv2.imread(self.samples[0][2])
        h, w = first.shape[:2]
        h2, w2 = h + h % 2, w + w % 2  # yuv420p: even sides
        proc = subprocess.Popen([_ffmpeg(), "-loglevel", "error", "-y", "-f", "rawvideo",
                                 "-pix_fmt", "bgr24", "-s", f"{w2}x{h2}", "-r", f"{fps:.6f}",
                                 "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                                 "-movflags", "+faststart", tmp],
                                stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        verdict = self._verdict(result)
        written = 0
        try:
            for k, (t, _, path) in enumerate(self.samples):
                until = self.samples[k + 1][0] if k + 1 < len(self.samples) else duration
                bgr = cv2.imread(path)
                s = self._scale(bgr)
                bgr = cv2.copyMakeBorder(bgr, 0, h2 - h, 0, w2 - w, cv2.BORDER_REPLICATE)
                _text(bgr, verdict, (int(12 * s), int(32 * s)), 0.9 * s, (255, 255, 255), 2)
                frames = max(1, int(round(until * fps)) - written)
                for n in range(frames):
                    frame = bgr.copy()
                    now = (written + n) / fps
                    _text(frame, f"{now:.2f} s / {duration:.2f} s",
                          (int(12 * s), h - int(14 * s)), 0.7 * s, (255, 255, 255), 2)
                    proc.stdin.write(frame.tobytes())
                written += frames
            proc.stdin.close()
            if proc.wait():
                raise IOError(f"ffmpeg could not write {out}: {proc.stderr.read().decode()[-200:]}")
        finally:
            if proc.poll() is None:
                proc.kill()

    def _timeline(self, result, threshold):
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
        times = [t for t, _, _ in self.samples]
        step = (times[1] - times[0]) if len(times) > 1 else 1.0
        for t, has_face, _ in self.samples:  # stretches without a face, shaded
            if not has_face:
                ax.axvspan(t - step / 2, t + step / 2, color="0.85", lw=0)
        for track, pts in sorted(self.points.items()):
            main = track == result.track
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=2.5 if main else 1,
                    label=f"track {track}" + (" (decides)" if main else ""))
        ax.axhline(threshold, color="k", ls="--", lw=1, label=f"threshold {threshold:.2f}")
        handles, labels = ax.get_legend_handles_labels()
        if any(not f for _, f, _ in self.samples):
            from matplotlib.patches import Patch
            handles.append(Patch(color="0.85"))
            labels.append("no face")
        ax.set_ylim(0, 1)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("fake probability")
        ax.set_title(f"{os.path.basename(self.path)}: {self._verdict(result)}", fontsize=10)
        ax.legend(handles, labels, fontsize=8, loc="upper right")
        fig.tight_layout()
        atomic_write_figure(self.base + "_timeline.png", fig)

    # ----------------------------------------------------------------- photos
    def photo(self, rgb, faces, threshold, maps=None):
        """The photo with each face boxed and labelled, and a strip of each face's heat map."""
        import cv2
        bgr = self._draw_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces)
        s = self._scale(bgr)
        top = max((f.prob for f in faces), default=None)
        verdict = ("no face found" if top is None else
                   f"{'FAKE' if top >= threshold else 'REAL'}  p(fake) {top:.2f}"
                   + (f", highest of {len(faces)} faces" if len(faces) > 1 else ""))
        _text(bgr, verdict, (int(12 * s), int(32 * s)), 0.8 * s, (255, 255, 255), 2)
        bgr = np.hstack([bgr, self._panel(bgr.shape[0], s, [
            (f"#{f.track} |face - recons.|", m) for f, m in zip(faces, maps or [])])])
        atomic_write_image(self.base + "_annotated.png", bgr)
