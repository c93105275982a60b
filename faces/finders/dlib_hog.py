"""dlib's HOG frontal-face detector: no weights file, so it is the offline default."""
from errors import UserError

from .base import Detection


class DlibFinder:
    """dlib's HOG detector as a face finder."""

    name = "dlib"

    def __init__(self, upsample=1, threshold=0.0):
        try:
            import dlib
        except ImportError:
            raise UserError("face_detector dlib needs the dlib package: pip install dlib-bin",
                            arg="face_detector") from None
        self.detector = dlib.get_frontal_face_detector()
        self.upsample = upsample
        self.threshold = threshold

    def __call__(self, rgb):
        rects, scores, _ = self.detector.run(rgb, self.upsample, self.threshold)
        return [Detection((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())),
                          float(s)) for r, s in zip(rects, scores)]
