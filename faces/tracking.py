"""Faces followed across the frames of a video, as tracks."""
from .crop import SAME_FACE_IOU, iou


class Tracker:
    """Faces followed across frames: each detection joins the track whose last box it overlaps
    most (IoU above 0.2, one detection per track and frame), or starts a new one."""

    def __init__(self):
        self.last = {}

    def assign(self, detections):
        taken, ids = set(), []
        for det in detections:
            best = max(((iou(det.box, box), t) for t, box in self.last.items() if t not in taken),
                       default=(0.0, None))
            tid = best[1] if best[0] > SAME_FACE_IOU else len(self.last)
            taken.add(tid)
            self.last[tid] = det.box
            ids.append(tid)
        return ids
