"""Helpers the layout modules share: folders, image listing (symlinks followed, loops not)."""
import os
import zlib

from errors import UserError
from fileio import files_in

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_lines(path):
    """The lines of a small text file (a dataset's list or labels), UTF-8 with or without a
    byte-order mark; a file in another encoding is one clear error naming it."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return fh.read().splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text (byte {exc.start})") from None


def read_json(path, what):
    """A small JSON file (UTF-8); one clear error naming it when it does not parse."""
    import json
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{what} {path} is not JSON: {exc}") from None


def require_dir(path, what):
    if not os.path.isdir(path):
        raise UserError(f"dataset root not found: {path} (expected {what})")


def choice(cfg, key, allowed, default=None):
    value = cfg.get(key, default)
    if value not in allowed:
        raise UserError(f"{key}: {value!r} is not one of {list(allowed)}")
    return value


def in_holdout(video, fraction):
    """Whether ``video`` is among the ``fraction`` of a split's videos held out for validation:
    decided by a hash of the video's name alone, so it is the same on every machine, for every
    seed and every rank, and a video's frames all fall on one side."""
    return zlib.crc32(str(video).encode("utf-8")) / 2 ** 32 < fraction


def video_of(rel_path):
    return os.path.dirname(rel_path).replace(os.sep, "/")


def is_image(name):
    return name.lower().endswith(IMAGE_EXTS)


def images_in(folder):
    """The image files directly in ``folder``, sorted (no glob: ``[`` in a path is just a
    character)."""
    return files_in(folder, IMAGE_EXTS) if os.path.isdir(folder) else []


def subfolders(folder):
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if os.path.isdir(os.path.join(folder, f)))


def walk_images(folder):
    """Every image below ``folder``, sorted; symlinked folders are followed, a symlink loop is not
    (each real folder is visited once)."""
    out, seen = [], set()
    for dirpath, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(dirpath, d)) not in seen)
        out += [os.path.join(dirpath, f) for f in files if is_image(f)]
    return sorted(out)


def check_entries(entries, path, pairs):
    """An index's entries: (path, label 0/1) pairs or plain paths; the first bad one is named."""
    if not isinstance(entries, (list, tuple)):
        raise UserError(f"index file {path}: expected a list, got a {type(entries).__name__}")
    for n, entry in enumerate(entries):
        if pairs:
            ok = (isinstance(entry, (list, tuple)) and len(entry) == 2
                  and isinstance(entry[0], str) and entry[0]
                  and not isinstance(entry[1], bool) and entry[1] in (0, 1)
                  and isinstance(entry[1], int))
            expected = "a (path, label 0 or 1) pair"
        else:
            ok = isinstance(entry, str) and bool(entry)
            expected = "an image path"
        if not ok:
            raise UserError(f"index file {path}: entry {n} is {entry!r}, expected {expected}")
    return entries
