"""The Python API: a trained detector, ready to score face crops, videos and photos. inference.py
is a command line over it.

    from faces import Predictor
    det = Predictor.from_checkpoint("runs/Recce/<id>/best_model_150.bin", device="cpu")
    det.predict("faces/")                  # a folder, a path, paths or RGB arrays -> [p_fake]
    det.predict_video("clip.mp4")          # the record inference.py --video writes
    det.predict_photo("photo.jpg")         # the record inference.py --detect writes

``Predictor`` wraps a ``model.Detector`` (the network contract: forward, loss, input spec) with
what scoring needs: the device, batches, decoding workers, the threshold, face detectors. Images
are prepared as the checkpoint's model was trained (``det.spec``). Errors about an argument start
with its name (``UserError.arg``), so that a command line can name its own flag instead.
"""
import inspect
import logging
import os

import cv2
import numpy as np
import torch

from errors import UserError
from fileio import atomic_write_image, check_output_dir, files_in
from model import DETECTORS
from model.backends import build_scorer, set_threads
from model.calibration import parse_threshold, resolve_band
from model.checkpoint import load_detector, pick_device
from model.heatmap import evidence_maps, heat_map, heat_ramp
from registry import import_modules

from . import media
from .arguments import check_keywords, frame_choice
from .crop import MARGIN
from .finders import build_face_finder
from .finders.base import MIN_FACE_SIZE
from .rules import DEFAULT_RULE, build_rule, detector_of
from .scoring import CropScorer

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
log = logging.getLogger("recce")


def list_images(image=None, folder=None, recursive=False):
    """One image, or the images of a folder (by extension, any case; with ``recursive`` its
    sub-folders too), sorted by path."""
    if image is not None:
        if not os.path.isfile(image):
            raise UserError(f"image not found: {image or repr(image)}")
        return [image]
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder or repr(folder)}")
    if recursive:
        paths = []
        for dirpath, dirs, files in os.walk(folder):
            dirs.sort()
            paths += [os.path.join(dirpath, f) for f in files if f.lower().endswith(IMAGE_EXTS)]
    else:
        paths = files_in(folder, IMAGE_EXTS)
    if not paths:
        raise UserError(f"no images ({', '.join(IMAGE_EXTS)}) in {folder}"
                        + ("" if recursive else " (sub-folders are read when recursive)"))
    return sorted(paths)


def as_items(images):
    """``predict``'s argument -> a list of paths and RGB arrays (a folder: its images, sorted);
    anything else, an empty path, an empty list or an array without pixels is a UserError
    naming it (``images``, or ``image <k>`` for the k-th of a list)."""
    if isinstance(images, (str, os.PathLike)):
        images = os.fspath(images)
        if not images:
            raise UserError("images '': an empty path (expected a folder or an image file)",
                            arg="images")
        return list_images(folder=images) if os.path.isdir(images) else list_images(image=images)
    if isinstance(images, np.ndarray):
        images = [images]
    if not isinstance(images, (list, tuple)):
        raise UserError(f"images: expected a folder, an image path, an H x W x 3 RGB uint8 array "
                        f"or a list of paths and arrays, got {type(images).__name__}",
                        arg="images")
    if not images:
        raise UserError("images []: an empty list (no image to score)", arg="images")
    items = []
    for k, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            item = os.fspath(item)
            if not item:
                raise UserError(f"image {k}: an empty path")
            items.append(item)
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise UserError(f"image {k}: expected an H x W x 3 RGB uint8 array, got "
                                f"{item.dtype} {tuple(item.shape)}")
            if not item.size:
                raise UserError(f"image {k}: an array of {item.shape[0]} x {item.shape[1]} "
                                "pixels (no pixel to score)")
            items.append(item)
        else:
            raise UserError(f"image {k}: expected a path or an RGB array, got "
                            f"{type(item).__name__}")
    return items


def as_path(path, name="path"):
    """A path given to the API (text or ``os.PathLike``, not empty) as text; anything else is a
    UserError naming the argument ``name``."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise UserError(f"{name} {path!r}: expected a path (text, not empty)", arg=name)
    return os.fspath(path)


def _label(img, text, org, scale):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)


def _fits(text, width, scale):
    return cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width


def draw_panels(name, x, recons, maps, prob, out_dir, verdict, mean, std):
    """One PNG ``<out_dir>/<name stem>.png``: the face (``x``, C x H x W on the model's normalised
    scale), its reconstruction (``recons``, alike; None for a detector without one), then each
    of ``maps`` ([(``model.heatmap.MapKind``, H x W map)]: the reconstruction difference,
    Grad-CAM), each panel titled, each map with its colour bar, its fixed scale and what the
    scale is beneath it, the score and its ``verdict`` (fake, real, uncertain) on top. Returns the
    path."""
    m, s = np.array(mean, np.float32), np.array(std, np.float32)
    side = max(128, x.shape[-2])
    columns = [("face", x)] + ([("reconstruction", recons)] if recons is not None else [])
    panels = []
    for title, t in columns:
        rgb = ((t.permute(1, 2, 0).numpy() * s + m) * 255).clip(0, 255).astype(np.uint8)
        panels.append((title, cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (side, side),
                                         interpolation=cv2.INTER_NEAREST), None))
    panels += [(kind.title if _fits(kind.title, side - 8, 0.42) else kind.short,
                heat_map(values, side, cv2.INTER_NEAREST, kind.top), kind)
               for kind, values in maps]
    foot_h = 40 if maps else 0
    out = []
    for title, panel, kind in panels:
        head = np.full((22, side, 3), 255, np.uint8)
        _label(head, title, (4, 16), 0.42)
        foot = np.full((foot_h, side, 3), 255, np.uint8)
        if kind is not None:  # the map's colour bar, its ends and its scale
            foot[2:10, 4:side - 4] = heat_ramp(side - 8, 8)
            _label(foot, "0", (4, 22), 0.35)
            right = cv2.getTextSize(kind.top_label, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)[0][0]
            _label(foot, kind.top_label, (side - 4 - right, 22), 0.35)
            _label(foot, kind.scale, (4, 36), 0.35)
        out.append(np.vstack([head, panel, foot]))
    body = np.hstack(out)
    bar = np.full((28, body.shape[1], 3), 255, np.uint8)
    _label(bar, f"fake probability {prob:.4f} ({verdict})", (6, 20), 0.55)
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
    atomic_write_image(path, np.vstack([bar, body]))
    return path


class Predictor:
    """A trained face-forgery detector, ready to score: the Python API behind inference.py.

    ``model`` is the ``model.Detector`` (eval mode, on ``device``). Its probabilities are calibrated
    where its checkpoint holds a calibration (``model.calibration``; ``calibration`` says which,
    None: raw). ``threshold`` makes a probability a verdict (fake at or above it): a number, or an
    operating point of the calibration (``fpr@0.01``, ``fpr@0.05``, ``fpr@0.1``, ``eer``); None or
    left out is 0.5 (``threshold_source`` says which); ``batch_size`` crops per forward pass
    (default 32 on a GPU, 8 on the CPU); ``num_workers`` decoding processes for image files;
    ``max_pixels`` refuses larger images and video frames; ``graphs``: on a GPU, replay CUDA graphs
    of the forward; ``backend`` (torch, onnxruntime, auto) and ``precision`` (fp32, bf16, auto): how
    the forward runs (``model.backends``; ``predictor.backend`` / ``predictor.precision`` say what
    was chosen); ``threads``: intra-op threads of torch and ONNX Runtime (None: as they are). Each
    value is checked where it enters (``faces.arguments``: the same rule as inference.py's flags);
    None means the default, never 0.
    """

    def __init__(self, model, device, threshold=None, batch_size=None, num_workers=0,
                 max_pixels=None, graphs=True, backend="torch", precision="fp32", threads=None):
        parse_threshold(threshold)  # first, as inference.py checks its flags
        given = check_keywords(batch_size=batch_size, num_workers=num_workers,
                               max_pixels=max_pixels, graphs=graphs, backend=backend,
                               precision=precision, threads=threads)
        device = pick_device(device)
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"model {model!r:.80}: expected a detector (a model.Detector; "
                            "Predictor.from_checkpoint loads one from a file), got "
                            f"{type(model).__name__}", arg="model")
        self.model, self.device = model, device
        set_threads(given["threads"])
        # the forward by backend and precision (model.backends): eager PyTorch (on a GPU, each
        # batch shape's forward captured once as a CUDA graph and replayed), ONNX Runtime, bf16
        self.forward = build_scorer(model, device, given["backend"], given["precision"],
                                    given["threads"], graphs=given["graphs"])
        self.backend, self.precision = self.forward.backend, self.forward.precision
        cal = getattr(model, "calibration", None)
        # a crop and a photo are judged by the frame-level points, a video by the video-level
        # ones (model.calibration.Band: one threshold, or an uncertain band a:b)
        self.band = resolve_band(threshold, cal, "frame")
        self.video_band = resolve_band(threshold, cal, "video")
        self.threshold, self.threshold_source = self.band.upper, self.band.source
        if self.band.note:  # a point the validation data does not support: said once, here
            log.warning("%s", self.band.note)
        self.batch_size = given["batch_size"] or (32 if device.type == "cuda" else 8)
        self.num_workers = given["num_workers"] or 0
        self.max_pixels = given["max_pixels"]
        self._face_detectors = {}
        self._rules = {}
        self._said_note = False

    @classmethod
    def from_checkpoint(cls, path, device=None, *, trust=False, model=None, num_classes=None,
                        image_size=None, imports=(), **kwargs):
        """Any checkpoint flavour (this project's, the original's, a bare state dict,
        DeepfakeBench's); ``model`` names the detector of a bare state dict, ``imports`` files
        that register your own detector (one string is one); never downloads anything. Other
        keywords go to ``Predictor``. Every value is checked before the checkpoint is read, the
        threshold first, by the rules of inference.py's flags."""
        parse_threshold(kwargs.get("threshold"))  # first; an operating point needs the file
        inspect.signature(cls).bind(None, None, **kwargs)  # an unknown keyword: a TypeError now
        given = check_keywords(trust=trust, num_classes=num_classes, image_size=image_size)
        check_keywords(**{k: v for k, v in kwargs.items() if k != "threshold"})
        if model is not None and (not isinstance(model, str) or not model.strip()):
            raise UserError(f"model {model!r:.80}: expected a detector's name (text), such as "
                            f"{', '.join(DETECTORS)}", arg="model")
        path = as_path(path)
        dev = pick_device(device)
        import_modules(imports, where="imports")
        if model is not None and model not in DETECTORS:
            raise UserError(f"model {model!r}: not a registered detector (known: "
                            f"{', '.join(DETECTORS)}; imports registers your own)", arg="model")
        if not os.path.isfile(path):
            raise UserError(f"checkpoint not found: {path}")
        det = load_detector(path, dev, trusted=given["trust"], name=model,
                            num_classes=given["num_classes"], image_size=given["image_size"])
        if det.calibration is None:
            log.info("%s has no calibration: raw probabilities, threshold 0.5 unless given "
                     "(python tools/calibrate.py calibrates it)", os.path.basename(path))
        return cls(det, dev, **kwargs)

    @property
    def spec(self):
        return self.model.spec

    @property
    def calibration(self):
        """The checkpoint's calibration as stored (``Calibration.to_dict``: temperature, operating
        points, what it was fitted on, ECE and NLL before and after), or None."""
        cal = getattr(self.model, "calibration", None)
        return None if cal is None else cal.to_dict()

    def describe_threshold(self, level="frame"):
        """One line: the threshold (or band) at ``level`` (frame: crops and photos; video), where
        it came from, its points' validation rates with their 95 % bounds and samples, and
        whether probabilities are calibrated; then the band's note, if any."""
        cal = getattr(self.model, "calibration", None)
        band = self.video_band if level == "video" else self.band
        src = {"default": "the default", "given": "given"}.get(band.source, band.source)
        def rates(name, p):
            bound = (f" (95 % bound <= {p['fpr_upper']:.4f} on {p['real']} real "
                     f"{'videos' if band.level == 'video' else 'frames'})"
                     if p.get("fpr_upper") is not None else "")
            return f"validation FPR {p['fpr']:.4f}{bound}, TPR {p['tpr']:.4f}"
        if len(band.points) == 1:
            said_rates = ", " + rates(*band.points[0])
        else:
            said_rates = "".join(f"; {name}: {rates(name, p)}" for name, p in band.points)
        if band.points and band.level == "video":
            src += " at the video level"
        probs = (f"calibrated probabilities ({cal.describe()})" if cal is not None else
                 "raw probabilities (the checkpoint has no calibration: python "
                 "tools/calibrate.py makes one)")
        value = (f"{band.upper:.4f}" if band.lower == band.upper else
                 f"uncertain from {band.lower:.4f}, fake from {band.upper:.4f}")
        said = f"threshold: {value} ({src}{said_rates}); {probs}"
        if band.supported is False:
            said += "; NOT SUPPORTED by the validation data"
        return said + (f"\nnote: {band.note}" if band.note else "")

    def scorer(self):
        """The crop scorer with this predictor's settings (``faces.scoring.CropScorer``)."""
        return CropScorer(self.model, self.device, self.batch_size, self.num_workers,
                          self.max_pixels, self.forward)

    def score_items(self, items, names=None, vis_dir=None):
        """Yields (index, probability or None, error, raw probability or None) in order,
        streaming through DataLoader workers (the probability is calibrated where the checkpoint has
        a calibration; the raw one is the detector's own); with ``vis_dir``, a panel per image,
        named by ``names``: the face, its reconstruction and the reconstruction difference where the
        model reconstructs, and Grad-CAM (``draw_panels``)."""
        if vis_dir is not None:
            check_output_dir(as_path(vis_dir, "vis_dir"), "vis_dir")
        for i, prob, err, pair, raw in self.scorer().stream(items, aux=vis_dir is not None):
            if pair is not None:
                x, recons = pair
                maps = evidence_maps(self.model, x[None],
                                     None if recons is None else recons[None])[0]
                draw_panels(names[i], x, recons, maps, prob, vis_dir, self.band.judge(prob),
                            self.spec.mean, self.spec.std)
            yield i, prob, err, raw

    def predict(self, images):
        """Fake probabilities, in the order given: ``images`` is a folder (its images, sorted by
        path), an image path, or a list of paths and H x W x 3 RGB uint8 arrays. An unreadable
        file is an error that names it."""
        items = as_items(images)
        probs = [None] * len(items)
        for i, prob, err, _ in self.score_items(items):
            if err:
                raise UserError(f"{items[i]}: {err}")
            probs[i] = prob
        return probs

    def face_detector(self, name, weights=None):
        """The face detector ``name`` (dlib, retinaface: with its ``weights`` file), built once."""
        if (name, weights) not in self._face_detectors:
            self._face_detectors[(name, weights)] = build_face_finder(name, weights, None, "cpu")
        return self._face_detectors[(name, weights)]

    @property
    def face_crop(self):
        """The crop rule raw media is cut by unless ``crop=`` says another: the checkpoint's
        (``face_crop``: its training faces' rule; DeepfakeBench's files: ``deepfakebench``), else
        ``box`` (``faces.rules``)."""
        return getattr(self.model, "face_crop", None) or DEFAULT_RULE

    def cutting(self, crop, face_detector, detector_weights, margin, landmarks,
                 min_face_score):
        """(face detector, crop rule) for raw media: the rule asked for or the checkpoint's, and
        its reference's detector (``box``: the one asked for, dlib by default)."""
        rule = crop or self.face_crop
        name = detector_of(rule, face_detector)
        if min_face_score is not None and rule != "box":
            raise UserError(f"min_face_score {min_face_score}: the {rule} crop rule takes the "
                            "faces its reference takes (its own floor); the floor is set under "
                            "crop box", arg="min_face_score")
        if landmarks is not None and rule != "deepfakebench":
            raise UserError(f"landmarks {landmarks}: the {rule} crop rule does not align faces",
                            arg="landmarks")
        return self.face_detector(name, detector_weights), self.crop_rule(rule, margin, landmarks)

    def crop_rule(self, name, margin=MARGIN, landmarks=None):
        """The crop rule ``name`` (``faces.rules``), built once (an aligned rule loads its shape
        predictor once)."""
        key = (name, margin, landmarks)
        if key not in self._rules:
            self._rules[key] = build_rule(name, margin, None, landmarks)
        return self._rules[key]

    def score_video(self, path, frames=None, every=None, all_frames=False, margin=MARGIN,
                    face_detector=None, detector_weights=None, vis_dir=None, name=None,
                    min_face_score=None, min_face_size=MIN_FACE_SIZE, crop=None, landmarks=None):
        """A video -> ``faces.media.Result`` (faces found, tracked, cut by the crop rule, scored);
        pictures into ``vis_dir`` under ``name`` (default: the file's stem). The frames:
        ``frames`` evenly spaced (``faces.video.FRAMES`` when none of the three is given), every
        ``every``-th, or ``all_frames``: one of them. ``crop``: the crop rule (default: the
        checkpoint's, ``face_crop``), which picks the face detector unless it is ``box``
        (``face_detector``: dlib by default); ``landmarks``: the shape predictor of the
        ``deepfakebench`` rule. Every value is checked before the video is opened."""
        given = check_keywords(frames=frames, every=every, all_frames=all_frames, margin=margin,
                               min_face_score=min_face_score, min_face_size=min_face_size,
                               crop=crop)
        frames, every = frame_choice(given["frames"], given["every"], given["all_frames"])
        path = self._media_path(path, vis_dir)
        finder, rule = self.cutting(given["crop"], face_detector, detector_weights,
                                     given["margin"], landmarks, given["min_face_score"])
        vis = media.Visualizer(vis_dir, path, name=name) if vis_dir is not None else None
        try:
            r = media.score_video(path, finder, self.scorer(), self.video_band, frames, every,
                                  given["margin"], vis, self.max_pixels, given["min_face_score"],
                                  given["min_face_size"], rule)
        except BaseException:
            if vis is not None:
                vis.discard()
            raise
        r.backend, r.precision = self.backend, self.precision
        if self.video_band.note and not self._said_note:
            log.warning("%s", self.video_band.note)  # once: a frame-level point, or unsupported
            self._said_note = True
        if vis is not None:
            vis.close(r, self.video_band) if r.error is None else vis.discard()
        return r

    def score_photo(self, path, margin=MARGIN, face_detector=None, detector_weights=None,
                    vis_dir=None, name=None, min_face_score=None,
                    min_face_size=MIN_FACE_SIZE, crop=None, landmarks=None):
        """A photo -> ``faces.media.Result`` (every face detected, cut by the crop rule as
        ``score_video``, and scored). Every value is checked before the photo is read."""
        given = check_keywords(margin=margin, min_face_score=min_face_score,
                               min_face_size=min_face_size, crop=crop)
        path = self._media_path(path, vis_dir)
        finder, rule = self.cutting(given["crop"], face_detector, detector_weights,
                                     given["margin"], landmarks, given["min_face_score"])
        vis = media.Visualizer(vis_dir, path, name=name) if vis_dir is not None else None
        r = media.score_photo(path, finder, self.scorer(), self.band, given["margin"],
                              self.max_pixels, vis, given["min_face_score"],
                              given["min_face_size"], rule)
        r.backend, r.precision = self.backend, self.precision
        return r

    @staticmethod
    def _media_path(path, vis_dir):
        """The path of a video or photo, and the folder of its pictures, checked."""
        if vis_dir is not None:
            check_output_dir(as_path(vis_dir, "vis_dir"), "vis_dir")
        return as_path(path)

    def predict_video(self, path, **kwargs):
        """The record inference.py --video writes for ``path`` (its ``--output`` row), with
        ``faces``: the rows of ``--frames_output``. Options as ``score_video``."""
        r = self.score_video(path, **kwargs)
        return {**media.record(r), "faces": media.face_records(r)}

    def predict_photo(self, path, **kwargs):
        """The record inference.py --detect writes for a photo, with its ``faces``."""
        r = self.score_photo(path, **kwargs)
        return {**media.record(r), "faces": media.face_records(r)}
