"""Self-blended images (Shiohara and Yamasaki, CVPR 2022, "Detecting Deepfakes with Self-Blended
Images"): training on real faces alone. Each real frame is paired with a forgery made from itself:
a colour- and frequency-perturbed copy of the face, slightly shifted and scaled, blended back in
through a deformed, blurred mask cut from the convex hull of the face's landmarks.

A dataset branch with ``self_blended: true`` (any layout) keeps its real frames only; sample ``i``
is the pair (the real frame, label 0, index 2i; its self-blended image, label 1, index 2i+1), and
``collate`` puts both into the same batch, as SBI's loader does. ``frames_per_batch`` halves the
trainer's batch so that ``train_batch_size`` still counts images (16 reals + 16 blends = 32).

The generator follows SBI's published code (mapooon/SelfBlendedImages, src/utils/sbi.py, blend.py,
funcs.py), read for its numbers and reimplemented here (docs/self_blended.md lists what differs):

- source-target augmentation of one of the two copies (each with probability 0.5): an RGB shift
  of up to 20 levels per channel (probability 0.3), a hue / saturation / value shift of up to 0.3
  levels and a brightness / contrast change of up to 10 %, then either a downscale by 2 or 4
  (nearest, back up bilinear) or a sharpening (alpha 0.2 to 0.5, lightness 0.5 to 1);
- the mask: the convex hull of the landmarks (81 points: with probability 0.25 the first 68 only),
  moved with the source by a random shift (3 % and 1.5 % of SBI's working crop: 6 % of the
  landmark box's width and 3.6 % of its height here) and scale (0.95 to 1/0.95 on each axis), then
  elastically deformed (alpha 50, sigma 7);
- the blur: resized to 192 to 256 pixels a side, blurred by an odd kernel of 5 to 25 pixels,
  cut to its full-strength core, blurred again (kernel 5 to 25, sigma 5 to 45), scaled to 1 at its
  peak, then multiplied by a blend ratio drawn from (0.25, 0.5, 0.75, 1, 1, 1);
- the crop (``self_blended_crop``): ``frame`` keeps the dataset's face crop as it is (the frames
  are already cut around the face, as at test time); ``landmarks`` first cuts SBI's wide working
  crop around the landmarks (half the landmark box's width on each side, its height above, 0.4 of
  it below) and cuts the final image from it with SBI's landmark margins (an eighth of the width
  on each side, half the height above, a fifth below, each times a random 0.2 to 0.8).

Every draw comes from one generator seeded by (config seed, epoch, index): a DataLoader with
workers gives the same batches as one without, and a run resumes on the same images.

Landmarks are read once, when the dataset is built: from the cache that ``tools/self_blended.py
prepare`` writes (dlib's shape predictor, one entry per frame; ``self_blended_landmarks``, by
default ``<root>/self_blended_landmarks.npz``), else from the ``landmarks/<video>/<frame>.npy``
beside ``frames/<video>/<frame>.png`` (DeepfakeBench's layout, as tools/extract_faces.py --crop
deepfakebench writes it). A frame without landmarks is left out and counted, never an error.
"""
import json
import logging
import os
import zipfile
from dataclasses import dataclass

import cv2
import numpy as np

from errors import UserError

from .base import (
    DEFAULT_MAX_PIXELS,
    LMDB_PREFIX,
    BadImageError,
    FaceFrames,
    Item,
    read_rgb,
    sample_seed,
)

log = logging.getLogger("recce")
DEFAULT_CACHE = "self_blended_landmarks.npz"
CACHE_FORMAT = "recce-self-blended-landmarks-1"
POINT_COUNTS = (68, 81)  # dlib's predictors: iBUG 300-W, and the 81-point one with the forehead
CROPS = ("frame", "landmarks")
METHOD = "self_blended"  # the method of the blended items (per-method metrics)
_SALT = 0x5B1  # the generator's stream, apart from the transforms' own seed


@dataclass(frozen=True)
class BlendSettings:
    """SBI's numbers (its code's; see the module's docstring)."""
    first_68: float = 0.25  # probability of the 68-point hull where there are 81 points
    rgb_p: float = 0.3
    rgb_shift: float = 20.0
    hsv_shift: float = 0.3
    brightness: float = 0.1
    contrast: float = 0.1
    downscale: tuple = (2, 4)
    sharpen_alpha: tuple = (0.2, 0.5)
    sharpen_lightness: tuple = (0.5, 1.0)
    source_p: float = 0.5  # the source (else the target) gets the source-target augmentation
    shift: tuple = (0.06, 0.036)  # of the landmark box's width and height
    scale: tuple = (0.95, 1 / 0.95)
    elastic_alpha: float = 50.0
    elastic_sigma: float = 7.0
    mask_side: tuple = (192, 256)
    kernel: tuple = (5, 25)  # odd sizes
    sigma: tuple = (5, 45)
    ratios: tuple = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)


SBI = BlendSettings()


class BlendError(ValueError):
    """The landmarks give no mask (a degenerate hull, points outside the image)."""


# ------------------------------------------------------------------------------ the generator
def hull_mask(shape, points):
    """The filled convex hull of ``points`` (N x 2, x y) on an H x W uint8 mask of 0 and 1."""
    mask = np.zeros(shape[:2], np.uint8)
    hull = cv2.convexHull(np.round(points).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask


def _lut(img, luts):
    return np.dstack([cv2.LUT(img[..., c], luts[c]) for c in range(3)])


def colour_jitter(img, rng, s=SBI):
    """RGB shift (probability ``s.rgb_p``), then hue / saturation / value and brightness / contrast
    shifts, on uint8 RGB; 8-bit look-up tables truncate toward zero, as the albumentations release
    SBI ran did (so a hue, saturation or value shift below zero lowers the channel by one level)."""
    levels = np.arange(256, dtype=np.float32)
    if rng.random() < s.rgb_p:
        shifts = rng.uniform(-s.rgb_shift, s.rgb_shift, 3)
        img = _lut(img, [np.clip(levels + d, 0, 255).astype(np.uint8) for d in shifts])
    dh, ds, dv = rng.uniform(-s.hsv_shift, s.hsv_shift, 3)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    hsv = _lut(hsv, [np.mod(levels + dh, 180).astype(np.uint8),
                     np.clip(levels + ds, 0, 255).astype(np.uint8),
                     np.clip(levels + dv, 0, 255).astype(np.uint8)])
    img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    alpha = 1 + rng.uniform(-s.contrast, s.contrast)
    beta = rng.uniform(-s.brightness, s.brightness) * 255
    lut = np.clip(levels * alpha + beta, 0, 255).astype(np.uint8)
    return cv2.LUT(img, lut)


def frequency_jitter(img, rng, s=SBI):
    """Either a downscale by 2 or 4 (nearest) and back (bilinear), or a 3 x 3 sharpening: the
    identity blended with [[-1,-1,-1],[-1,8+lightness,-1],[-1,-1,-1]] by alpha."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        r = s.downscale[rng.integers(len(s.downscale))]
        small = cv2.resize(img, (max(1, int(w / r)), max(1, int(h / r))),
                           interpolation=cv2.INTER_NEAREST)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    alpha = rng.uniform(*s.sharpen_alpha)
    lightness = rng.uniform(*s.sharpen_lightness)
    effect = -np.ones((3, 3), np.float32)
    effect[1, 1] = 8 + lightness
    keep = np.zeros((3, 3), np.float32)
    keep[1, 1] = 1
    return cv2.filter2D(img, -1, (1 - alpha) * keep + alpha * effect)


def landmark_box(points):
    """(x0, y0, x1, y1) of the first 68 points (SBI's crops use those)."""
    p = points[:68]
    return float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max())


def shift_scale(source, mask, points, rng, s=SBI):
    """The source and its mask moved together: a shift in units of the landmark box, a scale of
    each axis about the image centre (bilinear image, nearest mask, black border)."""
    h, w = source.shape[:2]
    x0, y0, x1, y1 = landmark_box(points)
    tx = rng.uniform(-s.shift[0], s.shift[0]) * (x1 - x0)
    ty = rng.uniform(-s.shift[1], s.shift[1]) * (y1 - y0)
    sx, sy = rng.uniform(*s.scale, 2)
    cx, cy = w / 2, h / 2
    m = np.array([[sx, 0, cx - sx * cx + tx], [0, sy, cy - sy * cy + ty]], np.float32)
    source = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT)
    mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return source, mask


def elastic(mask, rng, s=SBI):
    """An elastic deformation of the mask: a random displacement per pixel, uniform in [-1, 1],
    smoothed by a Gaussian of ``sigma`` and scaled by ``alpha`` (nearest, reflected border)."""
    h, w = mask.shape
    if s.elastic_alpha == 0:
        return mask
    dx, dy = (cv2.GaussianBlur(rng.random((h, w), dtype=np.float32) * 2 - 1, (0, 0),
                               s.elastic_sigma) for _ in range(2))
    xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(mask, xs + dx * s.elastic_alpha, ys + dy * s.elastic_alpha,
                     cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101)


def _odd(rng, low_high):
    low, high = low_high
    return low + 2 * int(rng.integers(0, (high - low) // 2 + 1))


def blend_mask(mask, rng, s=SBI):
    """The soft blending mask (H x W float32, peak 1) of a 0/1 uint8 mask: at 192 to 256 pixels a
    side, an 8-bit blur (which rounds: it smooths the outline) cut to its full-strength part, then
    a float blur, normalised to 1 and resized back."""
    h, w = mask.shape
    side_h, side_w = (int(v) for v in rng.integers(s.mask_side[0], s.mask_side[1] + 1, 2))
    m = cv2.resize(mask, (side_w, side_h))
    k1 = _odd(rng, s.kernel)
    m = cv2.GaussianBlur(m, (k1, k1), 0)
    if m.max() == 0:
        raise BlendError("the landmarks' hull leaves no mask")
    m = m.astype(np.float32) / float(m.max())
    m[m < 1] = 0
    k2 = _odd(rng, s.kernel)
    m = cv2.GaussianBlur(m, (k2, k2), float(rng.integers(s.sigma[0], s.sigma[1] + 1)))
    m /= m.max()
    return cv2.resize(m, (w, h))


def self_blend(img, points, rng, s=SBI):
    """(real, fake, mask): ``img`` (H x W x 3 uint8 RGB) and its self-blended image, from its
    landmarks ``points`` (N x 2, x y, in the image) and the generator ``rng``. ``real`` is the
    target: ``img``, or its source-target augmented copy when the draw fell on the target (as in
    SBI). ``mask`` (float32, 0 to the blend ratio) is the weight of the source in ``fake``, which
    equals ``real`` exactly wherever the mask is 0."""
    points = np.asarray(points, np.float32)
    hull = points[:68] if len(points) > 68 and rng.random() < s.first_68 else points
    mask = hull_mask(img.shape, hull)
    source, target = img.copy(), img
    if rng.random() < s.source_p:
        source = frequency_jitter(colour_jitter(source, rng, s), rng, s)
    else:
        target = frequency_jitter(colour_jitter(target, rng, s), rng, s)
    source, mask = shift_scale(source, mask, points, rng, s)
    mask = elastic(mask, rng, s)
    weight = blend_mask(mask, rng, s) * np.float32(s.ratios[rng.integers(len(s.ratios))])
    fake = target.astype(np.float32)
    fake += weight[..., None] * (source.astype(np.float32) - fake)  # 0 where the weight is 0
    return target, np.clip(np.rint(fake), 0, 255).astype(np.uint8), weight


def working_crop(shape, points):
    """SBI's wide crop around the landmarks, before blending (y0, y1, x0, x1)."""
    h, w = shape[:2]
    x0, y0, x1, y1 = landmark_box(points)
    bw, bh = x1 - x0, y1 - y0
    return (max(0, int(y0 - bh)), min(h, int(y1 + 0.4 * bh) + 1),
            max(0, int(x0 - bw / 2)), min(w, int(x1 + bw / 2) + 1))


def final_crop(shape, points, rng):
    """SBI's landmark crop with its random training margins (y0, y1, x0, x1)."""
    h, w = shape[:2]
    x0, y0, x1, y1 = landmark_box(points)
    bw, bh = x1 - x0, y1 - y0
    left, right, top, bottom = rng.uniform(0.2, 0.8, 4) * np.array([bw / 8, bw / 8, bh / 2,
                                                                      bh / 5])
    return (max(0, int(y0 - top)), min(h, int(y1 + bottom) + 1),
            max(0, int(x0 - left)), min(w, int(x1 + right) + 1))


def generate(img, points, rng, crop="frame", s=SBI):
    """(real, fake, mask) of one frame as the data source makes them, cropped by ``crop``."""
    if crop == "landmarks":
        y0, y1, x0, x1 = working_crop(img.shape, points)
        img = np.ascontiguousarray(img[y0:y1, x0:x1])
        points = np.asarray(points, np.float32) - np.array([x0, y0], np.float32)
    real, fake, mask = self_blend(img, points, rng, s)
    if crop == "landmarks":
        y0, y1, x0, x1 = final_crop(img.shape, points, rng)
        real, fake, mask = (np.ascontiguousarray(a[y0:y1, x0:x1]) for a in (real, fake, mask))
    if real.size == 0:
        raise BlendError("the landmarks lie outside the image")
    return real, fake, mask


def generator(seed, epoch, index):
    """The generator of one sample's blend: its own stream of (seed, epoch, index)."""
    return np.random.default_rng([sample_seed(seed, epoch, index), _SALT])


# ------------------------------------------------------------------------------------- landmarks
def check_points(points, where):
    """Landmarks as an N x 2 float32 array (a leading axis of one face is dropped, as SBI and
    DeepfakeBench store them); N must be 68 or 81 and every value finite."""
    a = np.asarray(points)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2 or a.shape[1] != 2 or a.shape[0] not in POINT_COUNTS or \
            not np.issubdtype(a.dtype, np.number) or not np.isfinite(a).all():
        raise UserError(f"{where}: expected 68 or 81 landmarks (x, y), got an array of shape "
                        f"{a.shape}")
    return a.astype(np.float32)


def cache_path(cfg):
    """The landmark cache of a branch: ``self_blended_landmarks``, else the default file in its
    root; None for a branch without either (its frames need DeepfakeBench's landmark files)."""
    given = cfg.get("self_blended_landmarks")
    if given:
        return given
    return os.path.join(cfg["root"], DEFAULT_CACHE) if cfg.get("root") else None


def frame_key(path, root=None):
    """A frame's key in the cache: its path relative to the branch's root when it lies inside,
    else its absolute path (an LMDB entry as it is), with forward slashes."""
    if path.startswith(LMDB_PREFIX):
        return path
    full = os.path.abspath(path)
    if root:
        rel = os.path.relpath(full, os.path.abspath(root))
        if not rel.startswith(os.pardir + os.sep) and rel != os.pardir:
            return rel.replace(os.sep, "/")
    return full.replace(os.sep, "/")


def read_cache(path):
    """(landmarks by frame key, keys of frames where no face was found, metadata) of a cache
    file; empty when there is none."""
    if not os.path.isfile(path):
        return {}, set(), {}
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != CACHE_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            keys, counts, flat = z["keys"], z["counts"], z["points"]
            missing = {str(k) for k in z["missing"]}
            if len(keys) != len(counts) or int(counts.sum()) != len(flat) or flat.ndim != 2:
                raise ValueError("its arrays do not match")
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a landmark cache of tools/self_blended.py prepare "
                        f"({' '.join(str(exc).split())})") from None
    ends = np.cumsum(counts)
    found = {str(k): flat[e - n:e] for k, n, e in zip(keys, counts, ends)}
    return found, missing, meta


def write_cache(path, found, missing, meta):
    """The cache file, atomically: ``found`` {key: N x 2}, ``missing`` keys, ``meta``."""
    from fileio import atomic_write
    keys = sorted(found)
    flat = (np.concatenate([found[k] for k in keys]).astype(np.float32) if keys
            else np.zeros((0, 2), np.float32))
    arrays = {"keys": np.array(keys, dtype=str), "missing": np.array(sorted(missing), dtype=str),
              "counts": np.array([len(found[k]) for k in keys], np.int32), "points": flat,
              "meta": np.array(json.dumps({**meta, "format": CACHE_FORMAT}))}
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic_write(path, lambda fh: np.savez_compressed(fh, **arrays), mode="wb")


def beside(path):
    """DeepfakeBench's landmark file of a frame: ``.../frames/<video>/<NNN>.png`` ->
    ``.../landmarks/<video>/<NNN>.npy``; None for other paths."""
    if path.startswith(LMDB_PREFIX):
        return None
    parts = path.replace(os.sep, "/").split("/")
    folders = parts[:-1]
    if "frames" not in folders:
        return None
    i = len(folders) - 1 - folders[::-1].index("frames")
    parts[i] = "landmarks"
    parts[-1] = os.path.splitext(parts[-1])[0] + ".npy"
    return "/".join(parts)


def find_landmarks(items, cfg, cache=None):
    """Each item's landmarks (or None) and the counts ``{"cache", "beside", "no_face",
    "unprepared", "unreadable"}``: the cache first, then DeepfakeBench's file beside the frame."""
    if cache is None:
        where = cache_path(cfg)
        cache = read_cache(where) if where else ({}, set(), {})
    found, missing, _ = cache
    root = cfg.get("root")
    counts = dict.fromkeys(("cache", "beside", "no_face", "unprepared", "unreadable"), 0)
    out = []
    for it in items:
        key = frame_key(it.path, root)
        points = found.get(key)
        if points is not None:
            counts["cache"] += 1
        elif key in missing:
            counts["no_face"] += 1
        else:
            npy = beside(it.path)
            if npy is not None and os.path.isfile(npy):
                try:
                    points = check_points(np.load(npy, allow_pickle=False), npy)
                    counts["beside"] += 1
                except (UserError, OSError, ValueError):
                    counts["unreadable"] += 1
            else:
                counts["unprepared"] += 1
        out.append(points)
    return out, counts


# --------------------------------------------------------------------------------- the data source
class SelfBlendedFrames(FaceFrames):
    """Real frames -> pairs ``[real sample, self-blended sample]`` (``collate`` flattens them).

    ``items`` hold both of a pair in turn: ``items[2i]`` the real frame, ``items[2i + 1]`` its
    blend (same file, label 1, video ``<video>#self_blended``, method ``self_blended``), so that
    evaluation and test.py name each score by its sample's index."""

    def __init__(self, items, cfg, seed=2022, name="dataset", on_bad_image="skip",
                 max_pixels=DEFAULT_MAX_PIXELS, defer_normalize=False, settings=SBI):
        reals = [it for it in items if it.label == 0]
        if not reals:
            raise UserError(f"{name}: self_blended needs real frames, and the split has none")
        crop = cfg.get("self_blended_crop", "frame")
        if crop not in CROPS:
            raise UserError(f"self_blended_crop: {crop!r} is not one of {list(CROPS)}")
        where = cache_path(cfg)
        points, counts = find_landmarks(reals, cfg)
        kept = [(it, p) for it, p in zip(reals, points) if p is not None]
        self.skipped = len(reals) - len(kept)
        self.counts = counts
        if not kept:
            raise UserError(f"{name}: none of its {len(reals)} real frames has landmarks (cache "
                            f"{where or 'none'}; no landmarks/ files beside frames/): run python "
                            "tools/self_blended.py prepare --config <your config>")
        if self.skipped:
            log.warning("self_blended %s: %d of %d real frames have no landmarks, left out (no "
                        "face found: %d, not prepared: %d, unreadable file: %d)", name,
                        self.skipped, len(reals), counts["no_face"], counts["unprepared"],
                        counts["unreadable"])
        log.info("self_blended %s: %d real frames, each with its self-blended image (%d fake "
                 "frames of the split left out); crop: %s", name, len(kept),
                 len(items) - len(reals), crop)
        paired = []
        for it, _ in kept:
            paired += [it, Item(it.path, 1, f"{it.video}#{METHOD}", METHOD)]
        super().__init__(paired, cfg.get("transforms", []), seed=seed, on_bad_image=on_bad_image,
                         name=name, max_pixels=max_pixels, defer_normalize=defer_normalize)
        self.points = [p for _, p in kept]
        self.crop = crop
        self.settings = settings

    def __len__(self):
        return len(self.points)

    def frames_per_batch(self, images):
        if images % 2:
            raise UserError(f"batch size {images}: {self.name} pairs each real frame with its "
                            "self-blended image, so a batch holds an even number of images")
        return images // 2

    def __getitem__(self, index):
        epoch, index = self.epoch_and_index(index)
        real_item, fake_item = self.items[2 * index], self.items[2 * index + 1]
        try:
            img = read_rgb(real_item.path, self.max_pixels)
            try:
                real, fake, _ = generate(img, self.points[index], generator(self.seed, epoch,
                                                                            index), self.crop,
                                         self.settings)
            except (BlendError, cv2.error) as exc:
                raise BadImageError(f"cannot self-blend {real_item.path}: {exc}") from None
            seed = sample_seed(self.seed, epoch, index)  # one draw of the transforms for both
            pair = [self._output(self._transform(real, seed, real_item.path), real_item,
                                 2 * index),
                    self._output(self._transform(fake, seed, real_item.path), fake_item,
                                 2 * index + 1)]
        except BadImageError as exc:
            if self.on_bad_image == "error":
                raise
            return [{"bad": real_item.path, "reason": str(exc), "index": 2 * index}]
        return pair


# ---------------------------------------------------------------------------------- benchmark
def template_landmarks(side):
    """68 points on an ellipse in the middle of a ``side`` x ``side`` face crop: a stand-in face
    for timing (the cost depends on the hull's area, not on its shape)."""
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    return np.stack([side * (0.5 + 0.3 * np.cos(t)), side * (0.55 + 0.35 * np.sin(t))],
                    1).astype(np.float32)
