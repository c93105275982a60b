"""The one small interface every face finder has: RGB image in, detections out; and which
detections are taken for faces."""
from dataclasses import dataclass, field

# The smallest detector score taken for a face, per detector. dlib's HOG scores: the real faces of
# the test photographs here (scikit-image's astronaut 1.16, down to 0.87 at a third of its size;
# matplotlib's Grace Hopper 1.27 to 1.41) against false boxes (the astronaut's mission patch 0.12 to
# 0.17, a name badge 0.02): 0.5 sits between them. RetinaFace: its release's own vis_thres, 0.6.
MIN_FACE_SCORE = {"dlib": 0.5, "retinaface": 0.6}
MIN_FACE_SIZE = 30  # pixels, the shorter side of the box: smaller ones give no usable crop


@dataclass
class Detection:
    box: tuple  # x1, y1, x2, y2 in pixels
    score: float
    landmarks: list = field(default_factory=list)  # [[x, y] x 5] where the detector gives them

    @property
    def area(self):
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def usable(dets, min_score, min_size):
    """The detections taken for faces: a detector score of at least ``min_score`` and a box whose
    shorter side has at least ``min_size`` pixels; the largest first."""
    keep = [d for d in dets if d.score >= min_score
            and min(d.box[2] - d.box[0], d.box[3] - d.box[1]) >= min_size]
    return sorted(keep, key=lambda d: -d.area)


def min_score_of(detector, min_score=None):
    return min_score if min_score is not None else \
        MIN_FACE_SCORE.get(getattr(detector, "name", ""), 0.0)
