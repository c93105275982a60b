"""FaceFrames: a list of face images with labels -> decoded, augmented tensors.

Every dataset class only turns its on-disk layout into ``Item``s; the image work happens here, in
``__getitem__``, so that with ``num_workers > 0`` it runs in the DataLoader's worker processes.
"""
import io
import logging
import os
import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from errors import UserError

from .transforms import build_transforms

log = logging.getLogger(__name__)
ON_BAD_IMAGE = ("skip", "error")
# a 64-megapixel image decodes to 192 MB; face crops are far smaller
DEFAULT_MAX_PIXELS = 64_000_000
cv2.setNumThreads(1)  # workers are the parallelism; OpenCV's own threads only contend with them
# OpenCV prints its own warning for every truncated file; the project reports each bad file once.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


class BadImageError(UserError):
    pass


class ImageTooLarge(BadImageError):
    """An image whose header states more pixels than the limit: refused before decoding, and
    known for an image (no other decoder should try it)."""

    def __init__(self, message, width, height, limit):
        super().__init__(message)
        self.width, self.height, self.limit = width, height, limit


@dataclass(frozen=True)
class Item:
    path: str  # absolute, or relative to the working directory
    label: int  # 0 real, 1 fake
    video: str  # frames of one video share it: video-level metrics average over them
    method: str = ""  # FF++ manipulation method ("original" for real videos)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _probe_png(buf):
    """A PNG's (width, height, orientation) from its chunks, without Pillow: IHDR gives the size;
    orientation 1 unless an eXIf chunk precedes the image data (then None: Pillow reads it)."""
    if buf.size < 33 or bytes(buf[12:16]) != b"IHDR":
        return None
    width = int.from_bytes(bytes(buf[16:20]), "big")
    height = int.from_bytes(bytes(buf[20:24]), "big")
    pos = 8
    while pos + 8 <= buf.size:
        kind = bytes(buf[pos + 4:pos + 8])
        if kind == b"eXIf":
            return None
        if kind in (b"IDAT", b"IEND"):
            break
        pos += 12 + int.from_bytes(bytes(buf[pos:pos + 4]), "big")
    return width, height, 1


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(buf):
    """A JPEG's (width, height) from its frame header (SOF), walking the marker segments; None
    when there is none before the end of the buffer."""
    pos = 2
    while pos + 9 <= buf.size:
        if buf[pos] != 0xFF:
            return None
        marker = int(buf[pos + 1])
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            pos += 2
            continue
        length = int(buf[pos + 2]) << 8 | int(buf[pos + 3])
        if marker in _SOF:
            height = int(buf[pos + 5]) << 8 | int(buf[pos + 6])
            width = int(buf[pos + 7]) << 8 | int(buf[pos + 8])
            return width, height
        pos += 2 + length
    return None


def _probe(buf):
    """(width, height, EXIF orientation) from the file's header, without decoding the pixels;
    None where Pillow does not know the format (OpenCV then decodes it under its own limit).
    PNG, the format of the crops, is read from its chunk list directly (a few microseconds, where
    Pillow takes longer than the decode); other formats, which carry EXIF, through Pillow."""
    if bytes(buf[:8]) == PNG_SIGNATURE:
        fast = _probe_png(buf)
        if fast is not None:
            return fast
    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf)) as im:
            orientation = im.getexif().get(0x0112, 1) if im.format in ("JPEG", "WEBP", "PNG",
                                                                       "TIFF") else 1
            return im.size[0], im.size[1], orientation
    except Image.DecompressionBombError as exc:
        # Pillow refuses the header's size (above twice its own bound): the size is read from the
        # JPEG header, or from Pillow's message, so that the image is refused as too large
        size = _jpeg_size(buf) if bytes(buf[:2]) == b"\xff\xd8" else None
        if size is not None:
            return size[0], size[1], 1
        numbers = [int(n) for n in re.findall(r"\((\d+) pixels\)", str(exc))]
        return (numbers[0], 1, 1) if numbers else (Image.MAX_IMAGE_PIXELS or 1 << 30, 2, 1)
    except Exception:  # noqa: BLE001 - unknown or broken header: the decoder will say
        return None


# EXIF orientation -> the array operation that shows the picture upright (as cv2.imread does)
_ORIENT = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1), 6: lambda a: a.swapaxes(0, 1)[:, ::-1],
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1], 8: lambda a: a.swapaxes(0, 1)[::-1],
}


LMDB_PREFIX = "lmdb:"  # lmdb:<environment folder>::<key>, an image stored in an LMDB store
_LMDB_ENVS = {}  # per process (each DataLoader worker opens its own, read-only)


def lmdb_path(env, key):
    return f"{LMDB_PREFIX}{env}::{key}"


def import_lmdb():
    """The lmdb module, or one line saying how to install it."""
    try:
        import lmdb
    except ImportError:
        raise UserError("reading an LMDB store needs the lmdb package: pip install lmdb") from None
    return lmdb


def _lmdb_bytes(path):
    env_path, _, key = path[len(LMDB_PREFIX):].partition("::")
    env = _LMDB_ENVS.get(env_path)
    if env is None:
        lmdb = import_lmdb()
        try:
            env = lmdb.open(env_path, readonly=True, lock=False, subdir=True, create=False)
        except lmdb.Error as exc:
            raise UserError(f"cannot open the LMDB store {env_path}: {exc}") from None
        _LMDB_ENVS[env_path] = env
    with env.begin(write=False) as txn:
        data = txn.get(key.encode())
    return None if data is None else np.frombuffer(data, np.uint8)


def read_rgb(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any image file -> H x W x 3 uint8 RGB (grayscale, RGBA, palette, 16-bit, CMYK included),
    upright as its EXIF orientation says (as ``cv2.imread``, which the original used).

    Raises BadImageError when the file cannot be decoded or has more than ``max_pixels`` pixels
    (checked from the header, before decoding: a small file can hold a huge image).
    """
    if path.startswith(LMDB_PREFIX):
        buf = _lmdb_bytes(path)
    else:
        buf = np.fromfile(path, dtype=np.uint8) if os.path.isfile(path) else None
    if buf is None or buf.size == 0:
        raise BadImageError(f"cannot read image {path}: missing or empty file")
    probe = _probe(buf)
    if probe and probe[0] * probe[1] > max_pixels:
        raise ImageTooLarge(f"image {path} has {probe[0]} x {probe[1]} pixels, more than the limit "
                            f"of {max_pixels} (max_pixels)", probe[0], probe[1], max_pixels)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise BadImageError(f"cannot decode image {path}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:  # alpha is dropped, as a face crop has no use for it
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif img.shape[2] == 1:
        img = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if probe and probe[2] in _ORIENT:
        img = np.ascontiguousarray(_ORIENT[probe[2]](img))
    return img


def worker_init(_worker_id=None):
    """DataLoader workers ignore SIGINT: Ctrl-C reaches the main process, which stops cleanly
    and shuts the workers down, instead of every worker dying with its own traceback. A worker's
    tensor-sharing thread whose peer (the interrupted main process) went away mid-handshake ends
    quietly too. Each worker decodes on one thread (PyTorch gives a worker one intra-op thread;
    OpenCV's own threads are set to one here), so that N workers take N cores at most and leave
    the rest to the forward (``--threads``)."""
    import signal
    import sys

    import cv2
    cv2.setNumThreads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    default = sys.excepthook  # multiprocessing's resource sharer reports through it

    def hook(exc_type, exc, tb):
        if not issubclass(exc_type, (EOFError, ConnectionError)):
            default(exc_type, exc, tb)
    sys.excepthook = hook


def iterate_quietly(loader):
    """``iter(loader)`` with SIGINT ignored while its workers start (they inherit that), so that a
    Ctrl-C reaches only the main process, even in a worker's first moments."""
    import signal
    import threading
    if loader.num_workers == 0 or threading.current_thread() is not threading.main_thread():
        return iter(loader)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return iter(loader)
    finally:
        signal.signal(signal.SIGINT, previous)


def deferred_normalize(transforms):
    """(transforms without a final plain ``Normalize``, its (mean, std, max_pixel_value)), or
    (transforms, None) when the list does not end with one that can move out of the workers."""
    if not isinstance(transforms, list) or not transforms:
        return transforms, None
    last = transforms[-1]
    params = (last.get("params") or {}) if isinstance(last, dict) else {}
    if not isinstance(last, dict) or last.get("name") != "Normalize" or \
            set(params) - {"mean", "std", "max_pixel_value", "p"} or params.get("p", 1.0) != 1.0:
        return transforms, None
    from model.detector import normalize_params
    mean, std, top = normalize_params(params)
    return transforms[:-1], (tuple(float(m) for m in mean), tuple(float(v) for v in std),
                             float(top))


def to_input(batch, device, non_blocking=True):
    """A collated batch's images on ``device`` as the model's float input: uint8 images (the
    workers' hand-over, 4x less to move) are converted and normalised here, on the device, as
    albumentations' Normalize computes it, (x - mean * max) * (1 / (std * max)) in float32: the
    same numbers bit for bit."""
    x = batch["image"].to(device, non_blocking=non_blocking)
    norm = batch.get("norm")
    if norm is None:
        return x
    m, inv = _norm_constants(tuple(norm[0]), tuple(norm[1]), float(norm[2]), x.device)
    return (x.float() - m) * inv  # times the float32 reciprocal, as albumentations: bit for bit


@lru_cache(maxsize=16)
def _norm_constants(mean, std, top, device):
    """mean * max and 1 / (std * max) as float32 1 x C x 1 x 1 tensors on ``device``, made once:
    building them from Python numbers every batch would be a blocking copy to a GPU, which waits
    for everything queued before it (a stall at the start of every training step)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * top
    inv = 1 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * top)
    return m.to(device), inv.to(device)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A per-sample seed: augmentation depends on (seed, epoch, index) only, not on the worker."""
    return zlib.crc32(f"{seed}:{epoch}:{index}".encode()) & 0x7FFFFFFF


class FaceFrames(Dataset):
    """Items -> ``{"image": C x H x W float, "label": int, "video": str, "index": int}``.

    A bad image yields ``{"bad": path, "reason": message, "index": i}`` instead when
    ``on_bad_image`` is "skip"; ``collate`` drops those samples and hands their paths to the
    training or evaluation loop, which warns once per file and reports the total. With "error" it
    raises, naming the file.
    """

    def __init__(self, items, transforms, seed: int = 2022, on_bad_image: str = "skip",
                 name: str = "dataset", max_pixels: int = DEFAULT_MAX_PIXELS, perturb=(),
                 defer_normalize: bool = False):
        if not items:
            raise UserError(f"{name}: the split has no images")
        if on_bad_image not in ON_BAD_IMAGE:
            raise UserError(f"on_bad_image: {on_bad_image!r} is not one of {ON_BAD_IMAGE}")
        self.items = list(items)
        # the trainer's and test.py's loaders hand uint8 over; ``to_input`` normalises the batch
        self.norm = None
        if defer_normalize:
            transforms, self.norm = deferred_normalize(transforms)
        self.transform = (build_transforms(transforms) if isinstance(transforms, list)
                          else transforms)
        self.seed = seed
        self.epoch = 0
        self.on_bad_image = on_bad_image
        self.name = name
        self.max_pixels = max_pixels
        self.perturb = [tuple(p) for p in perturb]  # [(distortion, level)], dataset/perturb.py
        self._video_cache = (None, {})  # VC: the last video encoded in this process

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.items)

    @property
    def labels(self):
        return [it.label for it in self.items]

    def epoch_and_index(self, index):
        """(epoch, index) of a request: the training sampler hands both, anyone else an index."""
        return index if isinstance(index, tuple) else (self.epoch, index)

    def __getitem__(self, index):
        epoch, index = self.epoch_and_index(index)
        item = self.items[index]
        try:
            img = read_rgb(item.path, self.max_pixels)
            if self.perturb:
                img = self._distort(img, index)
            image = self._transform(img, sample_seed(self.seed, epoch, index), item.path)
        except BadImageError as exc:
            if self.on_bad_image == "error":
                raise
            return {"bad": item.path, "reason": str(exc), "index": index}
        return self._output(image, item, index)

    def frames_per_batch(self, images):
        """How many dataset samples make a batch of ``images`` images (one each here)."""
        return images

    def _transform(self, img, seed, path):
        """The transforms of the branch on ``img``, their draws seeded by ``seed``."""
        self.transform.set_random_seed(seed)
        try:
            return self.transform(image=img)["image"]
        except Exception as exc:  # noqa: BLE001 - e.g. a RandomCrop larger than the image
            raise BadImageError(f"cannot transform image {path} ({img.shape[1]} x "
                                f"{img.shape[0]}): {' '.join(str(exc).split())}") from None

    def _output(self, image, item, index):
        if self.norm is not None and image.dtype == torch.uint8:
            return {"image": image, "norm": self.norm, "label": item.label, "video": item.video,
                    "index": index}
        if image.dtype == torch.uint8:  # no Normalize in the list: scale to [0, 1]
            image = image.float().div_(255)
        return {"image": image, "label": item.label, "video": item.video, "index": index}

    def _distort(self, img, index):
        """The test-time distortions, before the model's own transforms; deterministic per
        (config seed, sample index). VC encodes the frames of the sample's video together, once
        per video and level in each worker process, from the files as they are (in a combination,
        the distortions listed before it do not reach it)."""
        from .perturb import distort, encode_video, perturbation_rng
        for kind, level in self.perturb:
            if kind == "VC":
                img = self._video_frame(index, level, encode_video)
            else:
                img = distort(img, kind, level, perturbation_rng(self.seed, index, kind, level))
        return img

    def _video_frame(self, index, level, encode_video):
        from .perturb import LEVELS
        item = self.items[index]
        key = (item.video, level)
        if self._video_cache[0] != key:
            if not hasattr(self, "_members"):
                self._members = {}
                for i, it in enumerate(self.items):
                    self._members.setdefault(it.video, []).append(i)
            paths, frames = [], []
            for i in sorted(self._members[item.video], key=lambda i: self.items[i].path):
                try:
                    frames.append(read_rgb(self.items[i].path, self.max_pixels))
                    paths.append(self.items[i].path)
                except BadImageError:
                    continue  # reported when its own turn comes
            encoded = encode_video(frames, LEVELS["VC"][level - 1])
            self._video_cache = (key, dict(zip(paths, encoded)))
        return self._video_cache[1][item.path]


def collate(samples):
    """Stack the good samples; list the paths of the bad ones under ``bad``. A sample that is a
    list (a real frame and its self-blended image, dataset/self_blended.py) adds each of its
    members, side by side."""
    samples = [s for entry in samples for s in (entry if isinstance(entry, list) else [entry])]
    good = [s for s in samples if "bad" not in s]
    batch = {"bad": [s.get("reason", s["bad"]) for s in samples if "bad" in s]}
    if good:
        batch["image"] = torch.stack([s["image"] for s in good])
        batch["label"] = torch.tensor([s["label"] for s in good], dtype=torch.long)
        batch["video"] = [s["video"] for s in good]
        batch["index"] = torch.tensor([s["index"] for s in good], dtype=torch.long)
        if "norm" in good[0]:
            batch["norm"] = good[0]["norm"]
    return batch


class BadImageLog:
    """Counts skipped images in the main process: warns once per file, totals per epoch."""

    def __init__(self):
        self.seen = set()
        self.count = 0

    def add(self, reasons):
        for reason in reasons:
            self.count += 1
            if reason not in self.seen:
                self.seen.add(reason)
                log.warning("skipped a bad image: %s", reason)

    def take_count(self) -> int:
        n, self.count = self.count, 0
        return n
