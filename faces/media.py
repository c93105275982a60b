"""inference.py on what users have: videos and ordinary photos, not only face crops.

Frames are sampled and decoded one at a time as tools/extract_faces.py samples them, faces are
detected (dlib or RetinaFace), followed across frames as tracks, and cut by a crop rule
(``faces.rules``: the checkpoint's, as tools/extract_faces.py cuts with it), so a face scored
here and the same frame extracted then scored from a folder give the same probability. Crops of
several frames are scored in one batch (``faces.scoring.CropScorer``). A video's score is the mean
fake probability of a face track over its frames (as test.py's video-level metrics average); the
video is fake when any track seen in at least a quarter of the sampled frames is. A photo's score
is the highest of its faces.
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from dataset import read_rgb
from dataset.base import DEFAULT_MAX_PIXELS
from dataset.perturb import ffmpeg_executable
from errors import UserError
from fileio import atomic_write_figure, atomic_write_image, publish, temporary_beside, write_table
from model.heatmap import heat_map, heat_ramp

from .crop import MARGIN
from .finders.base import MIN_FACE_SIZE, min_score_of, usable
from .rules import build_rule
from .scoring import as_band, band_fields
from .scoring import result_line as line
from .tracking import Tracker
from .video import FRAMES, iter_frames

MIN_TRACK_SHARE = 0.25
WEAK_TRACK_SHARE = 0.5  # of the sampled frames, for a track of faces under the detector's floor
PROGRESS_EVERY = 30.0  # seconds between "scoring x.mp4: k of n frames" lines on stderr


@dataclass
class Face:
    frame: int
    time: float
    track: int
    box: tuple
    det_score: float
    prob: float = float("nan")  # calibrated, where the detector's checkpoint has a calibration
    raw_prob: float = float("nan")  # before calibration
    weak: bool = False  # below the detector's face floor: kept only where its track confirms it


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
    raw_score: float | None = None  # the score of the raw (uncalibrated) probabilities
    threshold: float = 0.5  # the verdict's threshold, and where it came from
    threshold_source: str = "given"
    band: object = None  # what the verdict was judged by (model.calibration.Band)
    prediction: str | None = None  # fake, real or uncertain
    face_crop: str = "box"  # the crop rule that cut its faces (faces.rules)
    backend: str = "torch"  # what scored it (model.backends)
    precision: str = "fp32"


def _faces_of(rule, detector, rgb, min_score, min_size):
    """The faces a crop rule takes in one frame, each with its cut (``faces.rules.Cut``) and
    whether it is below the face floor (``weak``). The named rules apply their reference's floor
    and nothing else (dlib's own for deepfakebench and ffpp, RetinaFace's 0.6 for recce); ``box``
    keeps a detection under ``min_score`` as weak (a track may confirm it) and drops boxes whose
    shorter side is under ``min_size``."""
    dets = rule.detect(detector, rgb)  # at the rule's own floor (none for box)
    if rule.name == "box":
        dets = usable(dets, 0.0, min_size)
    out = []
    for det in rule.faces(dets):
        piece = rule.cut(rgb, det)
        if piece is not None:
            out.append((det, piece, rule.name == "box" and det.score < min_score))
    return out


def score_video(path, detector, scorer, threshold, frames=FRAMES, every=None, margin=MARGIN,
                vis=None, max_pixels=None, min_score=None, min_size=MIN_FACE_SIZE, rule=None):
    """One video -> a Result; frames are decoded, detected and cropped one at a time, crops scored
    in batches across frames (only a batch of frames is ever held). ``rule``: the crop rule
    (``faces.rules``; default ``box`` with ``margin``), which also picks the frame indices. Under
    ``box``, detections below ``min_score`` are weak: scored, but kept only where their track
    confirms them (``confirm``); boxes under ``min_size`` are not faces. The verdict: see
    ``verdict``."""
    rule = rule or build_rule("box", margin)
    band = as_band(threshold)
    result = Result(path, "video", threshold=band.upper, threshold_source=band.source, band=band,
                    face_crop=rule.name)
    min_score = min_score_of(detector, min_score)
    tracker = Tracker()
    info = {}
    if vis is not None:
        vis.info = info  # the source's frame rate and length, for the annotated video
    pending = []  # (frame index, time, rgb or None, [(Face, crop)])

    def flush():
        crops = [c for *_, faces in pending for _, c in faces]
        probs, maps, raws = scorer(crops, with_maps=vis is not None, source=path)
        k = 0
        for idx, t, rgb, faces in pending:
            for face, _ in faces:
                face.prob, face.raw_prob = probs[k], raws[k]
                if vis is not None:
                    vis.add_face(face, maps[k] if maps else None)
                k += 1
                result.faces.append(face)
            if vis is not None:
                vis.add_frame(idx, t, rgb, [f for f, _ in faces], band.upper)
        pending.clear()

    last = time.monotonic()
    try:
        for idx, t, rgb in iter_frames(path, frames, every, info=info, max_pixels=max_pixels,
                                       choose=lambda n: rule.frame_indices(n, frames, every)):
            result.sampled += 1
            if time.monotonic() - last >= PROGRESS_EVERY:  # a long video says how far it is
                print(f"scoring {os.path.basename(path)}: {result.sampled} of {info['wanted']} "
                      "frames", file=sys.stderr, flush=True)
                last = time.monotonic()
            found = _faces_of(rule, detector, rgb, min_score, min_size)
            faces = []
            for (det, piece, weak), tid in zip(found, tracker.assign([d for d, _, _ in found])):
                faces.append((Face(idx, t, tid, tuple(det.box), det.score, weak=weak),
                              piece.crop))
            pending.append((idx, t, rgb if vis is not None else None, faces))
            if sum(len(f) for *_, f in pending) >= scorer.batch_size:
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
    confirm(result)
    verdict(result, band)
    return result


def confirm(result):
    """Weak faces (below the detector's face floor) stay only where their track confirms them: a
    track seen in at least two frames and in at least half of the sampled frames
    (``WEAK_TRACK_SHARE``), or holding a face above the floor. A one-frame false box is dropped,
    and so is a false box the detector finds now and then (scikit-image's astronaut's mission
    patch, scored about 0.01, in 14 of 32 frames); a small, clear face that the detector scores
    low in every frame is kept."""
    tracks = {}
    for face in result.faces:
        tracks.setdefault(face.track, []).append(face)
    keep = {t for t, faces in tracks.items()
            if not all(f.weak for f in faces)
            or len(faces) >= max(2, WEAK_TRACK_SHARE * result.sampled)}
    result.faces = [f for f in result.faces if f.track in keep]


def verdict(result, threshold):  # threshold: a number or a Band
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
    result.raw_score = float(np.mean([f.raw_prob for f in pool[result.track]]))
    result.prediction = as_band(threshold).judge(result.score)
    result.fake = result.prediction == "fake"


def score_photo(path, detector, scorer, threshold, margin=MARGIN, max_pixels=None, vis=None,
                min_score=None, min_size=MIN_FACE_SIZE, rule=None):
    """One photo -> a Result: every face the crop rule takes (``rule``, default ``box``: those of
    at least ``min_score`` and ``min_size``; a photo has no track to confirm a weak face) cut by it
    and scored; the photo's score is the highest."""
    rule = rule or build_rule("box", margin)
    band = as_band(threshold)
    result = Result(path, "photo", sampled=1, threshold=band.upper, threshold_source=band.source,
                    band=band, face_crop=rule.name)
    try:
        rgb = read_rgb(path, max_pixels or DEFAULT_MAX_PIXELS)  # EXIF orientation applied
    except UserError as exc:
        result.error = str(exc)
        return result
    found = [(det, piece) for det, piece, weak in
             _faces_of(rule, detector, rgb, min_score_of(detector, min_score), min_size)
             if not weak]
    faces, crops = [], []
    for i, (det, piece) in enumerate(found):
        faces.append(Face(0, 0.0, i, tuple(det.box), det.score))
        crops.append(piece.crop)
    probs, maps, raws = scorer(crops, with_maps=vis is not None, source=path) if crops \
        else ([], [], [])
    for face, p, raw in zip(faces, probs, raws):
        face.prob, face.raw_prob = p, raw
    result.faces, result.count, result.tracks = faces, len(faces), len(faces)
    if faces:
        result.score = max(probs)
        result.raw_score = raws[probs.index(result.score)]
        result.prediction = band.judge(result.score)
        result.fake = result.prediction == "fake"
    if vis is not None:
        vis.photo(rgb, faces, band, maps)
    return result


def result_line(r, threshold=None):
    """The line of a video or photo: the crop line's fields, then the frame (video) or face
    (photo) count; a video with more than one person says which track each line reports, one
    line per person."""
    what = "frames" if r.kind == "video" else "faces"
    if r.score is None:
        return line(r.path, None, None, [(what, r.sampled if r.kind == "video" else 0)])
    band = as_band(threshold) if threshold is not None else (r.band or as_band(r.threshold))
    first = line(r.path, r.score, r.prediction or band.judge(r.score), [(what, r.count)])
    if len(r.persons) < 2:
        return first
    lines = [line(r.path, r.score, r.prediction or band.judge(r.score),
                  [(what, r.count), ("track", r.track)])]
    for track, frames, prob in r.persons[1:]:
        lines.append(line(r.path, prob, band.judge(prob),
                          [("frames", frames), ("track", track)]))
    return "\n".join(lines)


# a video's or photo's --output row; raw_probability: the score before calibration (the same
# number for a checkpoint without one), threshold and threshold_source: what the prediction was
# judged by; backend and precision: what scored it (model.backends)
MEDIA_COLUMNS = ("path", "kind", "fake_probability", "prediction", "frames_or_faces", "tracks",
                 "track", "persons", "error", "raw_probability", "threshold", "threshold_source",
                 "backend", "precision", "face_crop", "threshold_lower", "threshold_level",
                 "threshold_fpr_upper", "threshold_supported")
FACE_COLUMNS = ("path", "frame", "time", "track", "x1", "y1", "x2", "y2", "detector_score",
                "fake_probability", "raw_probability")  # a face's --frames_output row


def record(r):
    """The ``--output`` row of a video or photo (the Python API's record)."""
    reason = r.error or (("no face found" if r.sampled else "no frame could be decoded")
                         if r.score is None else None)
    band = r.band or as_band(r.threshold)
    return {"path": r.path, "kind": r.kind, "fake_probability": r.score,
            "prediction": None if r.score is None else (r.prediction or band.judge(r.score)),
            "frames_or_faces": r.count, "tracks": r.tracks, "track": r.track,
            "persons": len(r.persons) if r.kind == "video" else r.count,  # a photo: one a face
            "error": reason,
            "raw_probability": r.raw_score if r.raw_score is not None else r.score,
            **band_fields(band), "threshold_source": r.threshold_source,
            "backend": r.backend, "precision": r.precision, "face_crop": r.face_crop}


def face_records(r):
    """The ``--frames_output`` rows of a video or photo: one per scored face."""
    return [{"path": r.path, "frame": f.frame, "time": round(f.time, 3), "track": f.track,
             "x1": f.box[0], "y1": f.box[1], "x2": f.box[2], "y2": f.box[3],
             "detector_score": f.det_score, "fake_probability": f.prob,
             "raw_probability": f.raw_prob} for f in r.faces]


def write_results(path, results):
    """The ``--output`` file of videos and photos (.csv or .json): one ``record`` each."""
    write_table(path, [record(r) for r in results], MEDIA_COLUMNS)


def write_frames(path, results):
    """The ``--frames_output`` table: one row per scored face (``face_records``), times to the
    millisecond, boxes to a tenth of a pixel."""
    rows = [dict(f, time=f"{f['time']:.3f}", detector_score=f"{f['detector_score']:.4f}",
                 **{k: f"{f[k]:.1f}" for k in ("x1", "y1", "x2", "y2")})
            for r in results for f in face_records(r)]
    write_table(path, rows, FACE_COLUMNS)


def threshold_from(metrics):
    """The EER threshold that test.py measured, read from its ``metrics`` file (metrics.json);
    errors start with ``metrics`` (``UserError.arg``)."""
    try:
        with open(metrics, encoding="utf-8") as fh:
            value = json.load(fh).get("EER_threshold")
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"metrics {metrics}: not a metrics.json of test.py ({exc})",
                        arg="metrics") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"metrics {metrics}: no finite EER_threshold in it (a split with one "
                        "class has none)", arg="metrics")
    return float(value)


def _bgr_of(prob):
    """The colour of a fake probability on a fixed scale: green (real, 0) - yellow - red (fake, 1).
    """
    from matplotlib import colormaps  # matplotlib where a picture is drawn: scoring starts sooner
    r, g, b, _ = colormaps["RdYlGn_r"](float(np.clip(prob, 0, 1)))
    return int(b * 255), int(g * 255), int(r * 255)


def _text(img, text, org, scale, color=(255, 255, 255), thickness=1):
    """Text legible on any background and at any resolution: outlined in black."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, text, org, font, scale, (0, 0, 0), thickness + 2 * max(1, thickness // 2 + 1),
                cv2.LINE_AA)
    cv2.putText(img, text, org, font, scale, color, thickness, cv2.LINE_AA)


class Visualizer:
    """``--visualize`` for videos and photos, into ``out_dir`` (no window). Per video
    ``<name>_annotated.mp4`` (H.264, browser-playable, as long as the source at its frame rate:
    each sampled frame shown until the next), every frame carrying the verdict and the time, each
    face boxed in its colour on a fixed real-to-fake scale with its track and probability, "no face"
    where none was found, a side panel with the legend and each face's evidence maps (the
    reconstruction difference where the model reconstructs, Grad-CAM where grad-cam is
    installed: ``model.heatmap``) with their fixed scales; and ``<name>_timeline.png`` (fake
    probability over time per track, the deciding track marked, the threshold drawn, no-face
    stretches shaded, titled with the file and the verdict). Per photo ``<name>_annotated.png``:
    the same boxes and side panel."""

    def __init__(self, out_dir, path, name=None):
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

    def _panel(self, h, s, rows):
        """The side panel: the real-to-fake colour scale of the boxes, then a row per face
        (``rows``: [(label, [(``model.heatmap.MapKind``, map)])]) with its maps side by side, each
        titled, with its colour bar, its fixed scale and what the scale is; faces that do not
        fit are left out."""
        cols = max([len(maps) for _, maps in rows] + [1])
        pad, side = int(10 * s), int(210 * s)
        width = pad + cols * (side + pad)
        panel = np.full((h, width, 3), 40, np.uint8)
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
        ramp = heat_ramp(side, int(8 * s))
        row_h = int(26 * s) + side + int(4 * s) + ramp.shape[0] + int(30 * s)
        for label, maps in rows:
            if not maps:
                continue
            if y + row_h > h:
                break
            for c, (kind, values) in enumerate(maps):
                x0, top = pad + c * (side + pad), y + int(20 * s)
                _text(panel, f"{label} {kind.short}", (x0, top), 0.45 * s)
                top += int(6 * s)
                panel[top:top + side, x0:x0 + side] = heat_map(values, side, top=kind.top)
                top += side + int(4 * s)
                panel[top:top + ramp.shape[0], x0:x0 + side] = ramp
                top += ramp.shape[0] + int(14 * s)
                _text(panel, "0", (x0, top), 0.4 * s)
                size = cv2.getTextSize(kind.top_label, cv2.FONT_HERSHEY_SIMPLEX, 0.4 * s, 1)[0]
                _text(panel, kind.top_label, (x0 + side - size[0], top), 0.4 * s)
                _text(panel, kind.scale, (x0, top + int(14 * s)), 0.38 * s)
            y += row_h
        return panel

    # ----------------------------------------------------------------- videos
    def add_face(self, face, maps):
        """A scored face of a video, with its maps ([(``MapKind``, map)]; None or [] for none)."""
        self.points.setdefault(face.track, []).append((face.time, face.prob))
        if maps:
            self.maps[(face.frame, face.track)] = maps

    def add_frame(self, idx, t, rgb, faces, threshold):
        """A sampled frame, annotated now (the verdict is added when the video is done)."""
        if self.tmp is None:
            self.tmp = tempfile.mkdtemp(prefix=".annotate-", dir=os.path.dirname(self.base) or ".")
        bgr = self._draw_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces)
        s = self._scale(bgr)
        rows = [(f"#{f.track}", self.maps.get((f.frame, f.track), [])) for f in faces]
        bgr = np.hstack([bgr, self._panel(bgr.shape[0], s, rows)])
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
        if self.tmp and os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp)  # our own temporary folder only

    def _verdict(self, result):
        if result.score is None:
            return "no face found"
        who = f", main track #{result.track}" if len(result.persons) > 1 else ""
        said = (result.prediction or ("fake" if result.fake else "real")).upper()
        return f"{said}  p(fake) {result.score:.2f}{who}"

    def _write_video(self, result):
        out = self.base + "_annotated.mp4"
        with temporary_beside(out, suffix=".mp4") as tmp:
            self._encode(tmp, out, result)
            publish(tmp, out)

    def _encode(self, tmp, out, result):
        """The sampled frames, each held until the next, with the verdict and the time, through
        ffmpeg (H.264) into the temporary file ``tmp`` (``out`` once it is complete)."""
        fps = float(self.info.get("fps") or 0.0) or 25.0
        total = int(self.info.get("total") or 0)
        duration = total / fps if total else self.samples[-1][0] + 1.0 / fps
        first = cv2.imread(self.samples[0][2])
        h, w = first.shape[:2]
        h2, w2 = h + h % 2, w + w % 2  # yuv420p: even sides
        proc = subprocess.Popen([ffmpeg_executable(), "-loglevel", "error", "-y", "-f", "rawvideo",
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
        from matplotlib.figure import Figure
        from matplotlib.patches import Patch
        fig = Figure(figsize=(7, 3.2), dpi=100)  # no pyplot: the caller's backend is left alone
        ax = fig.subplots()
        times = [t for t, _, _ in self.samples]
        step = (times[1] - times[0]) if len(times) > 1 else 1.0
        for t, has_face, _ in self.samples:  # stretches without a face, shaded
            if not has_face:
                ax.axvspan(t - step / 2, t + step / 2, color="0.85", lw=0)
        for track, pts in sorted(self.points.items()):
            main = track == result.track
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", lw=2.5 if main else 1,
                    label=f"track {track}" + (" (decides)" if main else ""))
        band = as_band(threshold)
        if band.lower < band.upper:  # the uncertain band, shaded between its ends
            ax.axhspan(band.lower, band.upper, color="#f2c94c", alpha=0.3, lw=0,
                       label=f"uncertain {band.lower:.2f} to {band.upper:.2f}")
        ax.axhline(band.upper, color="k", ls="--", lw=1, label=f"threshold {band.upper:.2f}")
        handles, labels = ax.get_legend_handles_labels()
        if any(not f for _, f, _ in self.samples):
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
        """The photo with each face boxed and labelled, and the side panel of each face's maps
        (``maps``: one [(``MapKind``, map)] per face)."""
        bgr = self._draw_faces(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), faces)
        s = self._scale(bgr)
        top = max((f.prob for f in faces), default=None)
        verdict = ("no face found" if top is None else
                   f"{as_band(threshold).judge(top).upper()}  p(fake) {top:.2f}"
                   + (f", highest of {len(faces)} faces" if len(faces) > 1 else ""))
        _text(bgr, verdict, (int(12 * s), int(32 * s)), 0.8 * s, (255, 255, 255), 2)
        bgr = np.hstack([bgr, self._panel(bgr.shape[0], s, [
            (f"#{f.track}", m) for f, m in zip(faces, maps or [])])])
        atomic_write_image(self.base + "_annotated.png", bgr)
