"""Inputs of the crop rules' fixture cases, made the same way by the tests and by the one-off
run of the references' code that computed ``fixtures/crop_rules`` (DeepfakeBench's
``preprocess.py``, FaceForensics++'s ``detect_from_video.py``)."""
import cv2
import numpy as np

# five points (left eye, right eye, nose, left and right mouth) and the output side
FIVE_POINT_CASES = [
    ([[120, 100], [170, 98], [146, 128], [124, 156], [168, 155]], 256),  # upright, centred
    ([[110, 92], [158, 112], [128, 134], [106, 155], [146, 172]], 256),  # rotated
    ([[6, 80], [40, 79], [22, 101], [9, 122], [37, 121]], 256),  # at the left edge: black border
    ([[268, 198], [300, 200], [285, 220], [272, 234], [297, 235]], 256),  # bottom-right corner
    ([[140, 110], [160, 110], [150, 122], [142, 133], [158, 133]], 224),  # small face, 224 px
]
FRAME_TOTALS = (1, 20, 31, 32, 33, 300)
# dlib boxes (left, top, right, bottom) and the frame's width and height: every edge, odd and even
FFPP_BOXES = [
    (100, 80, 180, 160, 320, 240), (101, 80, 182, 161, 320, 240),  # inside; even / odd sides
    (-12, 50, 60, 122, 320, 240), (0, 0, 81, 81, 320, 240),  # left edge, top-left corner
    (270, 60, 330, 120, 320, 240), (250, 180, 311, 241, 320, 240),  # right edge, bottom-right
    (120, -20, 200, 60, 320, 240), (10, 10, 300, 230, 320, 240),  # top edge; bigger than the frame
    (50, 40, 149, 180, 321, 239), (200, 100, 261, 139, 321, 239),  # tall, wide; odd frame
]


def synthetic(h=240, w=320):
    """An image with no symmetry, by formula (no random generator)."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 3 + yy) % 256, (yy * 5 + xx // 2) % 256, (xx * yy // 7) % 256],
                    -1).astype(np.uint8)


def _place(canvas, face, scale, angle, cx, cy):
    h, w = face.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    m[0, 2] += cx - w / 2
    m[1, 2] += cy - h / 2
    warped = cv2.warpAffine(face, m, (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
    mask = cv2.warpAffine(np.full(face.shape[:2], 255, np.uint8), m,
                          (canvas.shape[1], canvas.shape[0]), flags=cv2.INTER_NEAREST)
    canvas[mask > 0] = warped[mask > 0]
    return canvas


def astronaut_frames():
    """Frames of 480 x 640 built from scikit-image's astronaut: shifted, rotated, scaled, near the
    frame's edge, and with a second, smaller face."""
    from skimage import data
    face = data.astronaut()
    cases = [[(0.8, 0, 300, 260)], [(0.8, 0, 380, 230)], [(0.8, 12, 320, 250)],
             [(0.55, 0, 320, 240)], [(0.8, 0, 540, 260)],
             [(0.8, 0, 220, 260), (0.45, -8, 520, 250)]]
    frames = []
    for placements in cases:
        canvas = np.full((480, 640, 3), 40, np.uint8)
        for scale, angle, cx, cy in placements:
            canvas = _place(canvas, face, scale, angle, cx, cy)
        frames.append(canvas)
    return frames


def astronaut_video(path, frames, count=20):
    """A 640 x 480 MJPEG video of ``count`` frames cycling through ``frames`` (RGB)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for k in range(count):
        writer.write(cv2.cvtColor(frames[k % len(frames)], cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)
