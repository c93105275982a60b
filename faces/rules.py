"""Named crop rules: how the published weights' training faces were cut, one switch for extraction
(tools/extract_faces.py) and for scoring raw media (inference.py --video / --detect, the API, the
page).

Each rule is its reference's rule, read from the reference's published code and reimplemented:

- ``deepfakebench``: DeepfakeBench's ``preprocessing/preprocess.py`` (the data behind its public
  checkpoints): dlib's frontal detector (upsample 1) on the RGB frame, the largest face of every
  frame on its own (dlib's width x height, right - left + 1), five key points of the shape
  predictor (parts 37, 44, 30, 49, 55), a similarity transform (scikit-image's least-squares
  estimate) onto the 112-px five-point template, widened by 8 px, scaled to the output size, moved
  and scaled for a 1.3 margin; one bilinear ``warpAffine`` with a black border straight to 256 x
  256; the frame is dropped when dlib finds no face again in the aligned crop (passed to it in
  BGR order, as the reference does), whose landmarks are kept; frame indices
  ``np.linspace(0, n - 1, 32)`` rounded down; files ``frames/<video>/<NNN>.png`` and
  ``landmarks/<video>/<NNN>.npy``.
- ``ffpp``: FaceForensics++'s ``classification/detect_from_video.py``: dlib (upsample 1) on the
  grayscale frame, the first face dlib returns, a square of ``int(1.3 x`` the box's longer side``)``
  around the integer centre, its top-left clamped to the frame and its side shrunk to fit (always
  square), cut at the frame's own resolution.
- ``recce``: the original release cropped with RetinaFace (its README; the authors' modified
  ``detect.py`` of Pytorch_Retinaface, posted in VISION-SJTU/RECCE issue #1, could not be read
  here): RetinaFace at its release's drawing threshold 0.6 and this project's square 1.3 x box
  (assumed).
- ``box``: this project's crop: a square of 1.3 x the detector box's longer side around its
  centre, clipped to the frame; the largest face, then followed across the video.

A rule gives, per frame, the faces it takes (``Rule.faces``: every face, the one its reference
would choose first) and cuts one (``Rule.cut``) into a ``Cut``: the RGB crop and how it was cut
(a rectangle, or the affine matrix of an aligned crop), with the landmarks the rule found.
"""
from dataclasses import dataclass

import cv2
import numpy as np

from checks import CROP_RULES
from errors import UserError

from .crop import MARGIN, choose_face, crop_box, cut
from .landmarks import largest_face

DEFAULT_RULE = "box"  # a checkpoint that names no rule

# DeepfakeBench's five-point template, on a 112 x 112 face (eye centres, nose tip, mouth corners)
DFB_TEMPLATE = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                         [33.5493, 92.3655], [62.7299, 92.2041]], np.float32)
DFB_KEYPOINTS = (37, 44, 30, 49, 55)  # shape predictor parts: eyes, nose, mouth (as it picks them)
DFB_SIZE = 256
DFB_FRAMES = 32


@dataclass
class Cut:
    crop: np.ndarray  # RGB
    rect: tuple | None = None  # x1, y1, x2, y2 of the frame cut (box rules)
    warp: list | None = None  # the 2 x 3 affine matrix frame -> crop (aligned rules)
    keypoints: list | None = None  # the five points the alignment used, in the frame
    landmarks: np.ndarray | None = None  # every landmark of the face, in the crop (aligned rules)


def dfb_template(outsize=DFB_SIZE, scale=MARGIN):
    """DeepfakeBench's target points for an ``outsize`` crop with margin ``scale``: the 112-px
    template moved 8 px right, scaled to ``outsize``, moved by the margin and scaled back into the
    crop (float32 arithmetic throughout, as the reference's)."""
    dst = DFB_TEMPLATE.copy()
    dst[:, 0] += 8.0
    dst[:, 0] = dst[:, 0] * outsize / 112
    dst[:, 1] = dst[:, 1] * outsize / 112
    margin = outsize * (scale - 1) / 2.0
    dst += margin
    dst *= outsize / (outsize + 2 * margin)
    return dst


def dfb_matrix(points, outsize=DFB_SIZE, scale=MARGIN):
    """The 2 x 3 similarity transform (scikit-image's estimate) of five points onto the template."""
    from skimage.transform import SimilarityTransform
    src, dst = np.asarray(points).astype(np.float32), dfb_template(outsize, scale)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image 0.26 and later
        tform = SimilarityTransform.from_estimate(src, dst)
        if not tform:
            raise ValueError(f"no similarity transform fits the points {src.tolist()}")
    else:
        tform = SimilarityTransform()
        tform.estimate(src, dst)
    return tform.params[0:2, :]


def dfb_align(rgb, points, outsize=DFB_SIZE, scale=MARGIN):
    """DeepfakeBench's aligned crop: one bilinear warp, black border. Returns (crop, matrix)."""
    m = dfb_matrix(points, outsize, scale)
    return cv2.warpAffine(rgb, m, (outsize, outsize)), m


def dfb_frame_indices(total, frames=DFB_FRAMES):
    """DeepfakeBench's frames: ``np.linspace(0, total - 1, frames)`` rounded down, each once."""
    if total <= 0:
        return []
    return sorted(set(np.linspace(0, total - 1, frames, endpoint=True).astype(int).tolist()))


def ffpp_box(box, width, height, scale=MARGIN):
    """FaceForensics++'s crop of a dlib box (left, top, right, bottom in whole pixels): (x, y,
    side) of a square of ``int(max side x scale)`` around the integer centre, its top-left clamped
    to the frame and its side shrunk to fit."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    side = int(max(x2 - x1, y2 - y1) * scale)
    cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
    x = max(int(cx - side // 2), 0)
    y = max(int(cy - side // 2), 0)
    side = min(width - x, side)
    side = min(height - y, side)
    return x, y, side


def resize(crop, size):
    return crop if not size or crop.shape[:2] == (size, size) else \
        cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


class Rule:
    """A crop rule: which detector, which faces, how each is cut."""
    name = "box"
    detector = "dlib"  # the detector the reference used (None: any)
    floor = None  # the reference's smallest detector score; None: the detector's own default
    tracked = True  # extraction follows the first frame's face across the video
    aligned = False  # the crop needs landmarks (a shape predictor)
    layout = "folders"  # <out>/<video>/<frame:04d>.png; "deepfakebench": frames/, landmarks/
    size = None  # the crops' side unless --size says otherwise (None: as cut)

    def __init__(self, margin=MARGIN, size=None, landmarker=None):
        self.margin = margin
        self.size = size if size else type(self).size
        self.landmarker = landmarker

    def detect(self, detector, rgb):
        """The detections of a frame at or above the rule's floor (its reference's)."""
        return self._floored(detector(rgb))

    def _floored(self, dets):
        return [d for d in dets if d.score >= self.floor] if self.floor else list(dets)

    def faces(self, detections, previous=None):
        """The faces of one frame, the one the reference takes first (``previous``: the face
        followed so far, for tracked rules)."""
        first = choose_face(detections, previous)
        return [] if first is None else [first] + [d for d in detections if d is not first]

    def cut(self, rgb, det):
        rect = crop_box(det.box, rgb.shape[0], rgb.shape[1], self.margin)
        crop = cut(rgb, rect, self.size)
        return None if crop is None else Cut(crop, rect=rect)

    def frame_indices(self, total, frames, every):
        from .video import frame_indices
        return frame_indices(total, frames, every)

    def settings(self):
        """What the rule adds to manifest_meta.json: its name, its layout and its shape
        predictor (file and sha256)."""
        return {"crop_rule": self.name, "layout": self.layout,
                "landmarks": self.landmarker.describe() if self.landmarker is not None else None}


class BoxRule(Rule):
    name = "box"
    detector = None


class RecceRule(Rule):
    name = "recce"
    detector = "retinaface"
    floor = 0.6


class FFppRule(Rule):
    name = "ffpp"
    floor = 0.0
    tracked = False

    def detect(self, detector, rgb):
        return self._floored(detector(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)))

    def faces(self, detections, previous=None):
        return list(detections)  # dlib's order: the reference takes the first

    def cut(self, rgb, det):
        h, w = rgb.shape[:2]
        x, y, side = ffpp_box(det.box, w, h, self.margin)
        crop = rgb[y:y + side, x:x + side]
        if side <= 0 or crop.size == 0:
            return None
        return Cut(resize(np.ascontiguousarray(crop), self.size), rect=(x, y, x + side, y + side))


class DeepfakeBenchRule(Rule):
    name = "deepfakebench"
    floor = 0.0
    tracked = False
    aligned = True
    layout = "deepfakebench"
    size = DFB_SIZE

    def faces(self, detections, previous=None):
        if not detections:
            return []
        first = largest_face(detections)
        return [first] + [d for d in detections if d is not first]

    def cut(self, rgb, det):
        if self.landmarker is None:
            raise UserError("the deepfakebench crop rule needs a shape predictor (--landmarks)",
                            arg="landmarks")
        shape = self.landmarker.predict(rgb, det.box)
        points = shape[list(DFB_KEYPOINTS)]
        crop, m = dfb_align(rgb, points, self.size, self.margin)
        bgr = np.ascontiguousarray(crop[..., ::-1])  # the reference detects again in BGR order
        again = self.landmarker.detector(bgr)
        if not again:
            return None  # no face in the aligned crop: the reference drops the frame
        marks = self.landmarker.predict(bgr, again[0].box)
        return Cut(crop, warp=m.tolist(), keypoints=points.tolist(), landmarks=marks)

    def frame_indices(self, total, frames, every):
        from .video import frame_indices
        if every or not frames:
            return frame_indices(total, frames, every)
        return dfb_frame_indices(total, frames)


RULES = {r.name: r for r in (DeepfakeBenchRule, FFppRule, RecceRule, BoxRule)}


def check_rule(name, where="crop"):
    """The name of a crop rule, checked; errors name ``where``."""
    if name not in RULES:
        raise UserError(f"{where} {name!r}: expected one of {', '.join(CROP_RULES)}", arg=where)
    return name


def detector_of(rule, given=None, where="face_detector"):
    """The face detector a rule cuts with: the reference's; ``box`` takes the one ``given``
    (default dlib). A named rule given another detector is an error naming ``where``."""
    cls = RULES[check_rule(rule)]
    if cls.detector is None:
        return given or "dlib"
    if given is not None and given != cls.detector:
        raise UserError(f"{where} {given}: the {rule} crop rule detects faces with "
                        f"{cls.detector}, as its reference did", arg=where)
    return cls.detector


def build_rule(name, margin=MARGIN, size=None, landmarks=None):
    """A crop rule by name; ``landmarks``: the shape predictor's file (aligned rules: None finds
    the documented stand-in, ``faces.landmarks``)."""
    cls = RULES[check_rule(name)]
    marker = None
    if cls.aligned:
        from .landmarks import Landmarker
        marker = Landmarker(landmarks)
    return cls(margin=margin, size=size, landmarker=marker)
