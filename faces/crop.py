"""Face crops as the training data has them: a square around the detector's box, scaled by a
margin, clipped to the frame; the face followed across frames by overlap."""
import cv2
import numpy as np

MARGIN = 1.3  # the crop's side over the face box's longer side, as the training data is cropped
SAME_FACE_IOU = 0.2  # a box overlapping a face's last box more than this is the same face


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def choose_face(detections, previous):
    """The largest face; once a face is chosen, the one overlapping it most (if any does)."""
    if not detections:
        return None
    if previous is not None:
        best = max(detections, key=lambda d: iou(d.box, previous))
        if iou(best.box, previous) > SAME_FACE_IOU:
            return best
    return max(detections, key=lambda d: d.area)


def crop_box(box, height, width, margin):
    """A square of side max(w, h) * margin around the box centre, clipped to the frame."""
    x1, y1, x2, y2 = box
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = max(x2 - x1, y2 - y1) * margin / 2
    return (max(0, int(round(cx - half))), max(0, int(round(cy - half))),
            min(width, int(round(cx + half))), min(height, int(round(cy + half))))


def crop_face(rgb, box, margin=MARGIN, size=None):
    """The crop of the training data: the square of ``crop_box`` (clipped to the frame),
    optionally resized to ``size`` (area); None when nothing is left of it. inference.py's video
    and photo modes crop with this same function."""
    return cut(rgb, crop_box(box, rgb.shape[0], rgb.shape[1], margin), size)


def cut(rgb, rect, size=None):
    """The pixels of ``rect`` (x1, y1, x2, y2), resized to ``size`` (area) if given; None when
    the rectangle holds no pixel of the frame."""
    x1, y1, x2, y2 = rect
    crop = rgb[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]
    if crop.size == 0:
        return None
    if size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)
