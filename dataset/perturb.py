"""Real-world degradations: the perturbation protocol of DeeperForensics-1.0 (Jiang et al., CVPR
2020), seven distortions at five severities each, plus real JPEG re-encoding.

Each distortion takes an H x W x 3 uint8 RGB face image, a level 1..5 and a numpy Generator (for
the random ones), and returns the distorted uint8 image. Parameters, levels 1 to 5, as published:

- ``CS`` colour saturation: in YCbCr (studio range, [0, 1] scale), Cb and Cr pulled toward 0.5 by a
  factor 0.4, 0.3, 0.2, 0.1, 0.0;
- ``CC`` colour contrast: every pixel value multiplied by 0.85, 0.725, 0.6, 0.475, 0.35;
- ``BW`` block-wise: 8 x 8 grey (128) blocks at random places. The published rule draws
  ``min(H, W) // 256 * (16, 32, 48, 64, 80)`` of them, none at all under 256 pixels, which is every
  face crop; here the count is scaled to the crop, ``max(1, round(min(H, W) / 256 * n))``, so that a
  299 px face gets about as many blocks per pixel as a 256 px frame. ``BWF`` keeps the published
  (frame) rule;
- ``GNC`` Gaussian noise: white noise of variance 0.001, 0.002, 0.005, 0.01, 0.05 added to each
  YCbCr channel on a [0, 1] scale, clipped;
- ``GB`` Gaussian blur: kernel 7, 9, 13, 17, 21, sigma = kernel / 6;
- ``JPEG`` (a pixelation in the published code): resized down by 2, 3, 4, 5, 6 (area) and back up
  (nearest neighbour, OpenCV's exact variant: each block one value);
- ``VC`` video compression: H.264 (libx264) re-encode at CRF 30, 32, 35, 38, 40 through the ffmpeg of
  the ``imageio-ffmpeg`` package; whole videos where the frames are a video's (``encode_video``), one
  frame at a time otherwise;
- ``JQ`` real JPEG re-encoding at quality 90, 70, 50, 30, 10 (what users ask about most).
"""
import os
import subprocess
import tempfile

import cv2
import numpy as np

from errors import UserError

LEVELS = {
    "CS": (0.4, 0.3, 0.2, 0.1, 0.0),
    "CC": (0.85, 0.725, 0.6, 0.475, 0.35),
    "BW": (16, 32, 48, 64, 80),
    "BWF": (16, 32, 48, 64, 80),
    "GNC": (0.001, 0.002, 0.005, 0.01, 0.05),
    "GB": (7, 9, 13, 17, 21),
    "JPEG": (2, 3, 4, 5, 6),
    "VC": (30, 32, 35, 38, 40),
    "JQ": (90, 70, 50, 30, 10),
}
TYPES = ("CS", "CC", "BW", "GNC", "GB", "JPEG", "VC", "JQ")  # the grid; BWF on request

# ITU-R BT.601, studio range, on [0, 1]: ycbcr = OFFSET + M @ rgb
_M = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255
_OFFSET = np.array([16, 128, 128]) / 255
_M_INV = np.linalg.inv(_M)


def rgb_to_ycbcr(rgb):
    return (rgb.astype(np.float64) / 255) @ _M.T + _OFFSET


def ycbcr_to_rgb(ycc):
    return np.clip(np.rint(((ycc - _OFFSET) @ _M_INV.T) * 255), 0, 255).astype(np.uint8)


def parse_spec(text):
    """``"GB:3"`` -> ("GB", 3), with one line naming what is wrong otherwise."""
    kind, _, level = str(text).partition(":")
    kind = kind.strip().upper()
    if kind not in LEVELS:
        raise UserError(f"--perturb {text}: unknown distortion {kind!r} "
                        f"(known: {', '.join(LEVELS)})")
    if level.strip() not in ("1", "2", "3", "4", "5"):
        raise UserError(f"--perturb {text}: the level must be 1 to 5, e.g. {kind}:3")
    return kind, int(level)


def block_positions(h, w, level, rng, published=False):
    n = LEVELS["BW"][level - 1]
    count = min(h, w) // 256 * n if published else max(1, round(min(h, w) / 256 * n))
    if h < 8 or w < 8:
        return []
    return [(int(rng.integers(0, h - 7)), int(rng.integers(0, w - 7))) for _ in range(count)]


def encode_video(frames, crf):
    """H.264 at ``crf`` and back, frames of one video together (resized to the first frame's size
    for the codec, then back to each frame's own). Needs the imageio-ffmpeg package."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise UserError("the VC distortion needs ffmpeg: pip install imageio-ffmpeg") from None
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2  # yuv420p needs even sides
    raw = b"".join(cv2.resize(f, (w2, h2), interpolation=cv2.INTER_AREA).tobytes() for f in frames)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "v.mp4")
        enc = subprocess.run([exe, "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                              "-s", f"{w2}x{h2}", "-r", "25", "-i", "-", "-c:v", "libx264",
                              "-preset", "medium", "-crf", str(crf), "-pix_fmt", "yuv420p", path],
                             input=raw, capture_output=True)
        if enc.returncode:
            raise RuntimeError(f"ffmpeg could not encode: {enc.stderr.decode()[-300:]}")
        dec = subprocess.run([exe, "-loglevel", "error", "-i", path, "-f", "rawvideo", "-pix_fmt",
                              "rgb24", "-"], capture_output=True)
    data = np.frombuffer(dec.stdout, np.uint8).reshape(-1, h2, w2, 3)
    return [cv2.resize(data[i], (f.shape[1], f.shape[0]), interpolation=cv2.INTER_AREA)
            if (h2, w2) != f.shape[:2] else data[i].copy() for i, f in enumerate(frames)]


def distort(img, kind, level, rng):
    """One distortion at one level (1..5) of an RGB uint8 image."""
    p = LEVELS[kind][level - 1]
    if kind == "CS":
        ycc = rgb_to_ycbcr(img)
        ycc[..., 1:] = 0.5 + (ycc[..., 1:] - 0.5) * p
        return ycbcr_to_rgb(ycc)
    if kind == "CC":
        return np.clip(np.rint(img.astype(np.float64) * p), 0, 255).astype(np.uint8)
    if kind in ("BW", "BWF"):
        out = img.copy()
        for y, x in block_positions(img.shape[0], img.shape[1], level, rng, kind == "BWF"):
            out[y:y + 8, x:x + 8] = 128
        return out
    if kind == "GNC":
        ycc = rgb_to_ycbcr(img) + rng.normal(0, np.sqrt(p), img.shape)
        return ycbcr_to_rgb(np.clip(ycc, 0, 1))
    if kind == "GB":
        return cv2.GaussianBlur(img, (p, p), p / 6)
    if kind == "JPEG":
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(1, w // p), max(1, h // p)), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    if kind == "JQ":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, p])
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
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
            bad = [t for t in types if t not in LEVELS] + [lv for lv in levels if lv not in range(1, 6)]
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
