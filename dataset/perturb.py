"""Real-world degradations: the perturbation protocol of DeeperForensics-1.0 (Jiang et al., CVPR
2020), seven distortions at five severities each, as its published code computes them
(perturbation/distortions.py and add_distortion_to_video.py), plus real JPEG re-encoding and the
project's own variants.

Each distortion takes an H x W x 3 uint8 RGB image, a level 1..5 and a numpy Generator (for the
random ones), and returns the distorted uint8 RGB image. The published code works on OpenCV's BGR
frames; the colour operations here convert to BGR and back, so that they compute exactly what it
computes. Parameters, levels 1 to 5, as published:

- ``CS`` colour saturation, 0.4, 0.3, 0.2, 0.1, 0.0: the published YCbCr (OpenCV's float YCrCb of
  the 0-255 values, rescaled by 219 and 224 and offset by 16, over 255), Cb and Cr pulled toward
  0.5 by the factor, back to BGR, truncated to uint8;
- ``CC`` colour contrast, 0.85, 0.725, 0.6, 0.475, 0.35: every value multiplied, truncated;
- ``BW`` block-wise, 16, 32, 48, 64, 80: ``min(H, W) // 256 * n`` blocks of 8 x 8 grey (128) at
  uniform random places (top-left x in [0, W - 9], y in [0, H - 9]): none under 256 pixels, which is
  every face crop of a 299 px model;
- ``GNC`` Gaussian noise in colour components, variance 0.001, 0.002, 0.005, 0.01, 0.05: standard
  normal noise times the square root, added to the published YCbCr over 255, back to BGR, clipped
  to [0, 255] only then;
- ``GB`` Gaussian blur, kernel 7, 9, 13, 17, 21, sigma = kernel / 6 (OpenCV);
- ``JPEG`` (a pixelation in the published code), 2, 3, 4, 5, 6: resized down to (W // n, H // n)
  and back to (W, H), both with OpenCV's default bilinear interpolation (a smooth blur, not blocks);
- ``VC`` video compression, CRF 30, 32, 35, 38, 40: H.264 (libx264) through the ffmpeg of the
  ``imageio-ffmpeg`` package. The published operation re-encodes the video file
  (``ffmpeg -i in -crf n -y out``: tools/robustness.py --protocol frames does exactly that); on
  face crops the crops of one video are encoded together (``encode_video``), one at a time
  otherwise, which is harsher (a still frame is all I-frame);
- ``JQ`` real JPEG re-encoding at quality 90, 70, 50, 30, 10 (what users ask about most).

The project's own variants, under their own names: ``BWS`` the block count scaled to the crop,
``max(1, round(min(H, W) / 256 * n))``, so that a 299 px face gets about as many blocks per pixel
as a 256 px frame; ``JPEGB`` pixelation in blocks (area down, nearest up); ``GNCC`` the noise on
BT.601 studio-range YCbCr clipped before the conversion back. ``BWF`` is accepted as another name
of ``BW`` (earlier releases gave the published rule that name).
"""
import os
import subprocess
import tempfile

import cv2
import numpy as np

from errors import UserError
from fileio import temporary_beside

LEVELS = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
    "BW": (16, 32, 48, 64, 80),
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
    "GB": (7, 9, 13, 17, 21),
    "JPEG": (2, 3, 4, 5, 6),
    "VC": (30, 32, 35, 38, 40),
    "JQ": (90, 70, 50, 30, 10),
    "BWS": (16, 32, 48, 64, 80),
    "JPEGB": (2, 3, 4, 5, 6),
    "GNCC": (0.001, 0.002, 0.005, 0.01, 0.05),
}
ALIASES = {"BWF": "BW"}
TYPES = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC", "JQ")  # the grid; the variants on request
PUBLISHED = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC")  # DeeperForensics-1.0's seven

# ITU-R BT.601, studio range, on [0, 1]: ycbcr = OFFSET + M @ rgb (the GNCC variant)
_M = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0],
               [112.0, -93.786, -18.214]]) / 255
_OFFSET = np.array([16, 128, 128]) / 255
_M_INV = np.linalg.inv(_M)


def rgb_to_ycbcr(rgb):
    """BT.601 studio-range YCbCr on [0, 1] (the GNCC variant's colour space)."""
    return (rgb.astype(np.float64) / 255) @ _M.T + _OFFSET


def ycbcr_to_rgb(ycc):
    return np.clip(np.rint(((ycc - _OFFSET) @ _M_INV.T) * 255), 0, 255).astype(np.uint8)


def published_ycbcr(bgr):
    """The published code's YCbCr of a BGR image: OpenCV's float YCrCb of the 0-255 values (chroma
    offset 0.5), reordered to Y, Cb, Cr, then Y * 219 + 16 and C * 224 + 16, over 255."""
    ycrcb = cv2.cvtColor(bgr.astype(np.float32), cv2.COLOR_BGR2YCrCb)
    ycc = ycrcb[:, :, (0, 2, 1)].astype(np.float32)
    ycc[:, :, 0] = (ycc[:, :, 0] * (235 - 16) + 16) / 255.0
    ycc[:, :, 1:] = (ycc[:, :, 1:] * (240 - 16) + 16) / 255.0
    return ycc


def published_bgr(ycc):
    """The inverse of ``published_ycbcr``, as float32 BGR (not clipped, not rounded)."""
    ycc = ycc.astype(np.float32)
    ycc[:, :, 0] = (ycc[:, :, 0] * 255.0 - 16) / (235 - 16)
    ycc[:, :, 1:] = (ycc[:, :, 1:] * 255.0 - 16) / (240 - 16)
    return cv2.cvtColor(ycc[:, :, (0, 2, 1)].astype(np.float32), cv2.COLOR_YCrCb2BGR)


def _bgr(rgb):
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _rgb(bgr):
    return np.ascontiguousarray(bgr[:, :, ::-1])


def parse_spec(text):
    """``"GB:3"`` -> ("GB", 3), with one line naming what is wrong otherwise."""
    kind, _, level = str(text).partition(":")
    kind = kind.strip().upper()
    kind = ALIASES.get(kind, kind)
    if kind not in LEVELS:
        raise UserError(f"perturbation {text}: unknown distortion {kind!r} "
                        f"(known: {', '.join(LEVELS)})", arg="perturbation")
    if level.strip() not in ("1", "2", "3", "4", "5"):
        raise UserError(f"perturbation {text}: the level must be 1 to 5, e.g. {kind}:3",
                        arg="perturbation")
    return kind, int(level)


def block_positions(h, w, level, rng, scaled=False):
    """Top-left corners of the grey blocks: the published count ``min(h, w) // 256 * n`` at
    uniform places, x in [0, w - 9], y in [0, h - 9]; ``scaled`` (BWS) scales the count to the
    crop."""
    n = LEVELS["BW"][level - 1]
    count = max(1, round(min(h, w) / 256 * n)) if scaled else min(h, w) // 256 * n
    if h < 9 or w < 9:
        return []
    out = []
    for _ in range(count):
        x = int(rng.integers(0, w - 8))  # the published code draws x first, then y
        y = int(rng.integers(0, h - 8))
        out.append((y, x))
    return out


def encode_video(frames, crf):
    """H.264 at ``crf`` and back, frames of one video together (resized to the first frame's size
    for the codec, then back to each frame's own). Needs the imageio-ffmpeg package."""
    exe = ffmpeg_executable()
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2  # yuv420p needs even sides
    raw = b"".join(cv2.resize(f, (w2, h2), interpolation=cv2.INTER_AREA).tobytes() for f in frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.mp4")
        enc = subprocess.run([exe, "-loglevel", "error", "-y", "-f", "rawvideo",
                              "-pix_fmt", "rgb24", "-s", f"{w2}x{h2}", "-r", "25", "-i", "-",
                              "-c:v", "libx264", "-preset", "medium", "-crf", str(crf),
                              "-pix_fmt", "yuv420p", path],
                             input=raw, capture_output=True)
        if enc.returncode:
            raise RuntimeError(f"ffmpeg could not encode: {enc.stderr.decode()[-300:]}")
        dec = subprocess.run([exe, "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt",
                              "rgb24", "-"], capture_output=True)
    data = np.frombuffer(dec.stdout, np.uint8).reshape(-1, h2, w2, 3)
    return [cv2.resize(data[i], (f.shape[1], f.shape[0]), interpolation=cv2.INTER_AREA)
            if (h2, w2) != f.shape[:2] else data[i].copy() for i, f in enumerate(frames)]


def ffmpeg_executable():
    """The path of the ffmpeg that imageio-ffmpeg ships (it writes and re-encodes videos here and
    in the pictures of scored videos)."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("writing videos needs ffmpeg: pip install imageio-ffmpeg") from None
    return imageio_ffmpeg.get_ffmpeg_exe()


def distort_video(src, dst, kind, level, rng):
    """A whole video distorted as DeeperForensics-1.0's add_distortion_to_video.py does on its
    strictly aligned path (``--via_xvid``): VC is ``ffmpeg -i src -crf n -y dst``; any other type
    is applied to every frame, the frames written as XVID with OpenCV, then converted by ffmpeg
    with its defaults (H.264 for .mp4). Returns the number of frames."""
    exe = ffmpeg_executable()
    if kind == "VC":
        proc = subprocess.run([exe, "-loglevel", "error", "-i", src, "-crf",
                               str(LEVELS["VC"][level - 1]), "-y", dst], capture_output=True)
        if proc.returncode:
            raise UserError(f"{src}: ffmpeg could not re-encode it: "
                            f"{proc.stderr.decode(errors='replace')[-200:].strip()}")
        return int(cv2.VideoCapture(dst).get(cv2.CAP_PROP_FRAME_COUNT))
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        raise UserError(f"{src}: cannot open the video")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer, n = None, 0
    with temporary_beside(dst, suffix=".avi") as tmp:  # the XVID frames, before ffmpeg
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            out = _bgr(distort(_rgb(bgr), kind, level, rng))
            if writer is None:
                writer = cv2.VideoWriter(tmp, cv2.VideoWriter_fourcc(*"XVID"), fps,
                                         (out.shape[1], out.shape[0]))
            writer.write(out)
            n += 1
        cap.release()
        if writer is None:
            raise UserError(f"{src}: no frame could be decoded")
        writer.release()
        proc = subprocess.run([exe, "-loglevel", "error", "-i", tmp, "-y", dst],
                              capture_output=True)
        if proc.returncode:
            raise UserError(f"{src}: ffmpeg could not convert the distorted video: "
                            f"{proc.stderr.decode(errors='replace')[-200:].strip()}")
    return n


def gaussian_noise_color(img, variance, noise):
    """GNC as published, with the standard normal ``noise`` (H x W x 3) given."""
    ycc = published_ycbcr(_bgr(img)) / 255
    noisy = (ycc + np.sqrt(variance) * noise) * 255
    return _rgb(np.clip(published_bgr(noisy), 0, 255).astype(np.uint8))


def distort(img, kind, level, rng):
    """One distortion at one level (1..5) of an RGB uint8 image."""
    kind = ALIASES.get(kind, kind)
    p = LEVELS[kind][level - 1]
    if kind == "CS":
        ycc = published_ycbcr(_bgr(img))
        ycc[:, :, 1:] = 0.5 + (ycc[:, :, 1:] - 0.5) * p
        return _rgb(published_bgr(ycc).astype(np.uint8))
    if kind == "CC":
        return (img.astype(np.float32) * p).astype(np.uint8)
    if kind in ("BW", "BWS"):
        out = img.copy()
        for y, x in block_positions(img.shape[0], img.shape[1], level, rng, kind == "BWS"):
            out[y:y + 8, x:x + 8] = 128
        return out
    if kind == "GNC":
        return gaussian_noise_color(img, p, rng.standard_normal(img.shape))
    if kind == "GNCC":
        ycc = rgb_to_ycbcr(img) + rng.normal(0, np.sqrt(p), img.shape)
        return ycbcr_to_rgb(np.clip(ycc, 0, 1))
    if kind == "GB":
        return cv2.GaussianBlur(img, (p, p), p * 1.0 / 6)
    if kind == "JPEG":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, w // p), max(1, h // p)))  # OpenCV's default: bilinear
        return cv2.resize(small, (w, h))
    if kind == "JPEGB":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, w // p), max(1, h // p)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    if kind == "JQ":
        ok, buf = cv2.imencode(".jpg", _bgr(img), [cv2.IMWRITE_JPEG_QUALITY, p])
        return _rgb(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    if kind == "VC":
        return encode_video([img], p)[0]
    raise UserError(f"unknown distortion {kind!r}")


def perturbation_rng(seed, index, kind, level):
    """The generator of one image's distortion: (seed, sample index, distortion, level) only,
    whatever the worker."""
    return np.random.default_rng([int(seed) & 0x7FFFFFFF, int(index), LEVELS_ORDER[kind], level])


LEVELS_ORDER = {k: i for i, k in enumerate(LEVELS)}


def _make_transform():
    import albumentations as A

    class RandomDegradation(A.ImageOnlyTransform):
        """Training augmentation: with probability ``p``, one distortion of ``types`` at one level
        of ``levels``, drawn per sample (seeded like every albumentations transform here: by
        config seed, epoch and sample index). VC runs one frame at a time here."""

        def __init__(self, types=TYPES, levels=(1, 2, 3, 4, 5), p=0.5):
            super().__init__(p=p)
            bad = ([t for t in types if t not in LEVELS]
                   + [lv for lv in levels if lv not in range(1, 6)])
            if bad or not types or not levels:
                raise ValueError(f"unknown types or levels {bad}: types from {list(LEVELS)}, "
                                 "levels 1 to 5")
            self.types = list(types)
            self.levels = list(levels)

        def get_params(self):
            return {"kind": self.py_random.choice(self.types),
                    "level": self.py_random.choice(self.levels),
                    "seed": self.py_random.randrange(2 ** 31)}

        def apply(self, img, kind="GB", level=1, seed=0, **params):
            return distort(np.ascontiguousarray(img), kind, level, np.random.default_rng(seed))

        def get_transform_init_args_names(self):
            return ("types", "levels")
    return RandomDegradation


PROJECT_TRANSFORMS = {"RandomDegradation": _make_transform}
