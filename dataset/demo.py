"""A small synthetic face-forgery dataset, made offline from face photographs that installed
packages ship, for trying the pipeline. It is not a benchmark.

Real faces: scikit-image's LFW subset (100 faces), its astronaut portrait and matplotlib's Grace
Hopper portrait. Fakes are self-blended images (Shiohara and Yamasaki, CVPR 2022): a face blended
with a colour- and geometry-perturbed copy of itself inside a soft face-shaped mask; four blend
recipes stand for the four FF++ methods. A "video" is several augmented frames of one source face,
and no source photograph appears in two splits.

Two sets are written under ``out``:
- ``faceforensics/``: the FF++ layout (original_sequences / manipulated_sequences, c23), the
  official-style split files ``splits/{train,val,test}.json`` and the index pickles;
- ``celeb_df/``: the Celeb-DF v2 layout, made differently (fakes swap in another person's face with
  colour transfer), for cross-dataset evaluation.
"""
import json
import logging
import os
import shutil
import tempfile

import cv2
import numpy as np

from errors import UserError

from .faceforensics import FF_METHODS, build_faceforensics

log = logging.getLogger(__name__)
SIZE = 72  # pixels per side of a written face crop
REAL_FRAMES = 12
FAKE_FRAMES = 3  # per method: 4 methods x 3 = as many fake frames as real ones per source
SPLIT_SIZES = (70, 16, 16)  # sources per train / val / test
DONE_MARKER = ".complete"
VERSION = 6


def load_sources():
    """About a hundred face photographs as SIZE x SIZE RGB uint8."""
    import matplotlib.cbook
    import skimage.data

    faces = []
    lfw = skimage.data.lfw_subset()[:100]  # the first 100 are faces, the rest are not
    for img in lfw:
        g = np.clip(img * 255, 0, 255).astype(np.uint8)
        faces.append(cv2.resize(cv2.cvtColor(g, cv2.COLOR_GRAY2RGB), (SIZE, SIZE),
                                interpolation=cv2.INTER_CUBIC))
    astro = skimage.data.astronaut()[20:220, 150:330]  # her face, roughly centred
    faces.append(cv2.resize(astro, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        hopper = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    hopper = cv2.cvtColor(hopper[40:360, 90:410], cv2.COLOR_BGR2RGB)
    faces.append(cv2.resize(hopper, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return faces


def _tint(face, rng):
    """Give a grayscale photo a plausible skin tone so that colour carries information."""
    if np.ptp(face.astype(int) - face[..., :1].astype(int)) > 10:
        return face  # already in colour
    tone = rng.uniform([0.85, 0.65, 0.5], [1.05, 0.85, 0.75])
    tinted = face.astype(np.float32) * tone + rng.uniform(-10, 10, 3)
    return np.clip(tinted, 0, 255).astype(np.uint8)


def _frame(face, rng):
    """One video frame: small shift, zoom, brightness change and sensor noise."""
    angle = rng.uniform(-4, 4)
    scale = rng.uniform(0.96, 1.04)
    m = cv2.getRotationMatrix2D((SIZE / 2, SIZE / 2), angle, scale)
    m[:, 2] += rng.uniform(-2, 2, 2)
    out = cv2.warpAffine(face, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
    out = out.astype(np.float32) * rng.uniform(0.9, 1.1) + rng.normal(0, 1.0, out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


def _ellipse_mask(rng, cx, cy, ax, ay, blur):
    mask = np.zeros((SIZE, SIZE), np.float32)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(ax), int(ay)), rng.uniform(-10, 10), 0, 360, 1.0, -1)
    k = int(blur * 3) * 2 + 1
    return cv2.GaussianBlur(mask, (k, k), blur)[..., None]


def _self_blend(img, method, rng):
    """Blend a perturbed copy of ``img`` into itself inside a soft mask; the recipe is per method.
    """
    src = img.astype(np.float32)
    c = SIZE / 2
    if method == "Deepfakes":  # colour shift and slight zoom, large smooth mask
        copy = src * rng.choice([-1, 1], 3) * rng.uniform(0.12, 0.25, 3) + src
        m = cv2.getRotationMatrix2D((c, c), 0, rng.uniform(1.04, 1.10))
        copy = cv2.warpAffine(copy, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
        mask = _ellipse_mask(rng, c, c + 2, SIZE * 0.33, SIZE * 0.42, 1.5)
    elif method == "Face2Face":  # expression-like geometry: shifted, rotated copy
        m = cv2.getRotationMatrix2D((c, c), rng.choice([-1, 1]) * rng.uniform(5, 10), 1.0)
        m[:, 2] += rng.choice([-1, 1], 2) * rng.uniform(2, 4, 2)
        copy = cv2.warpAffine(src, m, (SIZE, SIZE), borderMode=cv2.BORDER_REFLECT)
        copy = copy * rng.choice([0.82, 1.18])
        mask = _ellipse_mask(rng, c, c + 4, SIZE * 0.28, SIZE * 0.34, 1.2)
    elif method == "FaceSwap":  # strong colour change, sharp boundary
        copy = src[..., rng.permutation(3)] * 0.5 + src * 0.5
        copy = copy + rng.uniform(-25, 25, 3)
        mask = _ellipse_mask(rng, c, c, SIZE * 0.30, SIZE * 0.38, 1.0)
    else:  # NeuralTextures: re-rendered mouth region, smoothed and with other contrast
        copy = cv2.GaussianBlur(src, (7, 7), 2.0)
        copy = (copy - copy.mean()) * rng.uniform(1.4, 1.7) + copy.mean()
        mask = _ellipse_mask(rng, c, c + SIZE * 0.2, SIZE * 0.26, SIZE * 0.17, 1.0)
    # every recipe also shifts the copy's colour a little, as SBI's source-target augmentation does
    copy = copy * rng.uniform(0.8, 1.2, 3) + rng.choice([-1, 1]) * rng.uniform(12, 24)
    out = mask * copy + (1 - mask) * src
    return np.clip(out, 0, 255).astype(np.uint8)


def _swap(target, donor, rng):
    """Celeb-DF style: another person's face, colour-matched, inside a soft mask."""
    t, d = target.astype(np.float32), donor.astype(np.float32)
    d = (d - d.mean((0, 1))) / (d.std((0, 1)) + 1e-6) * t.std((0, 1)) + t.mean((0, 1))
    mask = _ellipse_mask(rng, SIZE / 2, SIZE / 2 + 3, SIZE * 0.27, SIZE * 0.35, 2.5)
    return np.clip(mask * d + (1 - mask) * t, 0, 255).astype(np.uint8)


def _write(path, img):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert ok
    buf.tofile(path)


def _make_faceforensics(root, faces, rng):
    order = rng.permutation(len(faces))
    ids = {int(i): f"{n:03d}" for n, i in enumerate(order)}
    bounds = np.cumsum((0,) + SPLIT_SIZES)
    splits = {}
    for split, lo, hi in zip(("train", "val", "test"), bounds[:-1], bounds[1:]):
        members = [int(i) for i in order[lo:hi]]
        splits[split] = [[ids[a], ids[b]] for a, b in zip(members[0::2], members[1::2])]
    os.makedirs(os.path.join(root, "splits"), exist_ok=True)
    for split, pairs in splits.items():
        with open(os.path.join(root, "splits", f"{split}.json"), "w") as fh:
            json.dump(pairs, fh)
    for split, pairs in splits.items():
        for a, b in pairs:
            for vid, other in ((a, b), (b, a)):
                face = faces[int(order[int(vid)])]
                real_dir = os.path.join(root, "original_sequences", "youtube", "c23", "images", vid)
                for f in range(REAL_FRAMES):
                    _write(os.path.join(real_dir, f"{f:04d}.png"), _frame(face, rng))
                for method in FF_METHODS:
                    fake_dir = os.path.join(root, "manipulated_sequences", method, "c23", "images",
                                            f"{vid}_{other}")
                    for f in range(FAKE_FRAMES):
                        frame = _self_blend(_frame(face, rng), method, rng)
                        _write(os.path.join(fake_dir, f"{f:04d}.png"), frame)
    counts, missing = build_faceforensics(root, os.path.join(root, "splits"), "c23")
    assert not missing, missing
    return counts


def _make_celeb_df(root, faces, rng, videos=24, frames=4):
    listed = []
    picks = rng.permutation(len(faces))
    for n in range(videos):
        face = faces[int(picks[n % len(picks)])][:, ::-1]  # mirrored: not the FF++ demo's images
        folder = ("YouTube-real", "Celeb-real", "Celeb-synthesis")[n % 3]
        name = f"id{n:02d}_{n % 7:04d}"
        donor = faces[int(picks[(n + 11) % len(picks)])][:, ::-1]
        for f in range(frames):
            img = _frame(np.ascontiguousarray(face), rng)
            if folder == "Celeb-synthesis":
                img = _swap(img, _frame(np.ascontiguousarray(donor), rng), rng)
            _write(os.path.join(root, folder, "images", name, f"{f:04d}.png"), img)
        if n % 2 == 0:  # half of the videos form the test list (Celeb-DF's label: 1 = real)
            listed.append(f"{0 if folder == 'Celeb-synthesis' else 1} {folder}/{name}.mp4")
    with open(os.path.join(root, "List_of_testing_videos.txt"), "w") as fh:
        fh.write("\n".join(listed) + "\n")


BUILDING_MARKER = ".building"  # present while this builder replaces its own older demo data


def _is_ours(out):
    return any(os.path.isfile(os.path.join(out, m)) for m in (DONE_MARKER, BUILDING_MARKER))


def _check_target(out):
    """The demo is built only into a missing or empty folder, or over its own earlier demo data."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"cannot build the demo data into {out}: it is a file")
    if os.path.isdir(out) and os.listdir(out) and not _is_ours(out):
        raise UserError(f"refusing to build the demo data into {out}: the folder holds files that "
                        "are not the demo's (choose an empty or new folder)")


def make_demo_dataset(out: str, seed: int = 0, replace: bool = True) -> dict:
    """Write both demo sets under ``out``; returns the FF++ counts.

    ``out`` must be missing, empty, or hold this builder's own demo data (its marker file): the
    builder never deletes or overwrites anything else. The data is made in a temporary folder of
    its own beside ``out`` and moved into place when complete, so a run killed half-way leaves no
    half-made dataset (only, at worst, its own ``.demo-build-*`` folder). With ``replace`` False,
    complete demo data that another process (a rank of the same run) finished meanwhile is kept
    as it is, never swapped under that process's feet.
    """
    out = os.path.normpath(out)
    _check_target(out)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".demo-build-", dir=parent)
    try:
        rng = np.random.default_rng(seed)
        faces = [_tint(f, rng) for f in load_sources()]
        counts = _make_faceforensics(os.path.join(tmp, "faceforensics"), faces, rng)
        _make_celeb_df(os.path.join(tmp, "celeb_df"), faces, rng)
        with open(os.path.join(tmp, DONE_MARKER), "w") as fh:
            json.dump({"version": VERSION, "seed": seed}, fh)
        if replace or not demo_ready(out):
            _install(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)  # the temporary folder this call made
    return counts


def _install(tmp, out):
    if not os.path.isdir(out) or not os.listdir(out):
        try:
            os.replace(tmp, out)  # onto a missing or empty folder: one atomic rename
            return
        except OSError:
            if demo_ready(out):  # another process (a rank of the same run) was first
                return
            raise
    _check_target(out)  # ours: replace only the entries this builder writes
    open(os.path.join(out, BUILDING_MARKER), "w").close()
    done = os.path.join(out, DONE_MARKER)
    if os.path.isfile(done):
        os.remove(done)
    for name in ("faceforensics", "celeb_df"):
        if os.path.isdir(os.path.join(out, name)):
            shutil.rmtree(os.path.join(out, name))  # our own earlier demo data (marker checked)
        os.replace(os.path.join(tmp, name), os.path.join(out, name))
    os.replace(os.path.join(tmp, DONE_MARKER), done)
    os.remove(os.path.join(out, BUILDING_MARKER))


def demo_ready(out: str) -> bool:
    return os.path.isfile(os.path.join(out, DONE_MARKER))


def ensure_demo_data(out: str) -> str:
    """Make the demo data under ``out`` unless it is already complete; returns ``out``."""
    if not demo_ready(out):
        log.info("building the demo dataset in %s (offline, about 10 s)", out)
        make_demo_dataset(out, replace=False)
    return out


def ensure_demo_root(root: str):
    """A branch with ``demo: true``: its root is a set inside the demo data, made when missing.

    A root that is missing beside complete demo data is a typing mistake, reported as a missing
    root; a parent folder holding anything else is never built into.
    """
    root = os.path.normpath(root)
    if os.path.isdir(root):
        return
    parent = os.path.dirname(root) or "."
    if not demo_ready(parent):
        import logging
        logging.getLogger("recce").warning(
            "the demo data is not at %s: building it there (about 33 MB, a few seconds)",
            os.path.abspath(parent))
        ensure_demo_data(parent)
    if not os.path.isdir(root):
        sets = ", ".join(sorted(d for d in os.listdir(parent) if not d.startswith(".")))
        raise UserError(f"dataset root not found: {root} (the demo data in {parent} has: {sets})")
