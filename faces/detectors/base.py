"""The one small interface every face detector has: RGB image in, detections out."""
from dataclasses import dataclass, field


@dataclass
class Detection:
    box: tuple  # x1, y1, x2, y2 in pixels
    score: float
    landmarks: list = field(default_factory=list)  # [[x, y] x 5] where the detector gives them

    @property
    def area(self):
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)
