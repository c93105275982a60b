"""Writing files without ever leaving half of one, checking output paths before the work, and the
file helpers every part shares: the folder lock, resumable tables (CSV/JSON rows), digests.

Every output of the project is written to a temporary file of its own in the same folder, then
renamed over the target: an interrupt, a kill or a full disk leaves the previous file (or none)
and removes the temporary file where the process is still alive to do it.

Every entry point imports this module: OpenCV and matplotlib are imported only by the writers of
pictures and figures, which need them.
"""
import csv
import fcntl
import hashlib
import json
import os
import tempfile
from contextlib import contextmanager

from errors import UserError


@contextmanager
def temporary_beside(path, suffix=".tmp"):
    """The name of a new empty file of our own beside ``path`` (made exclusively, so that
    removing it can never touch anybody else's file), for writers that take a path (ONNX,
    torch.export, ffmpeg, OpenCV; ``suffix`` keeps the extension they go by). ``publish`` it over
    ``path`` when the result is good; whatever is left of it is removed on the way out (the write
    failed, was interrupted, or its result was refused)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def publish(tmp, path):
    """Rename the finished temporary file over ``path``, with the permissions a new file gets
    (mkstemp's 0600 would make outputs private)."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)


def atomic_write(path, write, mode="w", **open_kwargs):
    """``write(fh)`` into a temporary file beside ``path``, then rename it over ``path``."""
    with temporary_beside(path) as tmp:
        with open(tmp, mode, **open_kwargs) as fh:
            write(fh)
        publish(tmp, path)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path, text):
    atomic_write(path, lambda fh: fh.write(text), encoding="utf-8")


def atomic_write_image(path, bgr):
    """A picture (H x W x 3 BGR, as OpenCV's) encoded by its extension and written atomically;
    an image that cannot be encoded is an error naming the path."""
    import cv2
    ok, data = cv2.imencode(os.path.splitext(path)[1] or ".png", bgr)
    if not ok:
        raise OSError(f"cannot encode the picture {path}")
    atomic_write(path, lambda fh: fh.write(data.tobytes()), mode="wb")


def atomic_write_array(path, array):
    """A NumPy array as a ``.npy`` file (no pickle), written atomically."""
    import numpy as np
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False), mode="wb")


def atomic_write_figure(path, fig):
    """A matplotlib figure saved as PNG, atomically, then closed (its memory freed, written or
    not)."""
    import matplotlib.pyplot as plt
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png"), mode="wb")
    finally:
        plt.close(fig)


def check_output_file(path, what="output file"):
    """An output file's folder must exist and be writable, and the path must not be a folder.
    ``what`` names the path in the message (an entry point gives its flag)."""
    if os.path.isdir(path):
        raise UserError(f"{what} {path}: is a folder, expected a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"{what} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise UserError(f"{what} {path}: the folder {folder} is not writable")


def check_output_dir(path, what="output folder"):
    """An output folder, checked before the work: refused when it (or a folder it would be made
    in) is a file, or cannot be written. It is not made here but when the outputs are written
    (``os.makedirs`` there): a run that fails on its input leaves no empty folder behind, in a
    mistyped path least of all. ``what`` names the path in the message."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path}: is a file, expected a folder", arg=what)
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UserError(f"{what} {path}: {probe} is a file, not a folder to make it in", arg=what)
    if not os.access(probe, os.W_OK):
        raise UserError(f"{what} {path}: {probe} is not writable", arg=what)


_LOCKED = set()  # the locks this process holds (POSIX locks do not exclude their owner)


class FolderLock:
    """An exclusive lock on a folder that one run writes (``<folder>/.lock``, a POSIX record lock,
    lockf): a second run into the same folder is refused with one line while the first runs, from
    another process or from this one. The kernel releases the lock when the process dies, so a
    killed run never leaves it stuck, and DataLoader workers forked while it is held do not inherit
    it (flock would), so a killed run's orphaned workers never keep the folder locked. The lock
    file names its holder (``pid N``). The message reads ``<what> <folder> is in use by another run
    (<holder>): wait for it, or <remedy>``; ``what`` is the argument ``UserError.arg`` names.
    ``name``: the lock file's name (a part of a folder that runs write side by side, such as one
    shard of a sharded run, locks its own)."""

    def __init__(self, folder, what="folder", remedy="use another folder", name=".lock"):
        self.path = os.path.join(folder, name)
        self.key = os.path.realpath(self.path)

        def busy(holder):
            return UserError(f"{what} {folder} is in use by another run ({holder}): wait for it, "
                             f"or {remedy}", arg=what)
        if self.key in _LOCKED:
            raise busy("this process")
        self.fh = open(self.path, "a+")
        try:
            fcntl.lockf(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.seek(0)
            holder = self.fh.read().strip() or "a running process"
            self.fh.close()
            raise busy(holder) from None
        _LOCKED.add(self.key)
        self.fh.seek(0)
        self.fh.truncate()
        self.fh.write(f"pid {os.getpid()}")
        self.fh.flush()

    def release(self):
        if not self.fh.closed:
            self.fh.close()
            _LOCKED.discard(self.key)


def sha256_of(path):
    """The SHA-256 of a file's bytes, read in blocks, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path, fields, numbers=(), integers=(), what="a table"):
    """The rows (dicts) of a resumable CSV table this project wrote at ``path``, or [] when there
    is none yet. A file that is not as it was written (other columns, a row cut short, a cell of
    ``numbers`` that is neither empty nor a number, one of ``integers`` that is not an integer,
    not UTF-8: edited by hand or cut short) is one error line naming it as ``what``, never
    half-read."""
    if not os.path.isfile(path):
        return []
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if reader.fieldnames != list(fields):
                raise ValueError(f"columns {reader.fieldnames}")
            rows = list(reader)
        for n, row in enumerate(rows, 2):
            if None in row or any(v is None for v in row.values()):
                raise ValueError(f"line {n} has another number of fields")
            for key in numbers:
                if row[key] != "":
                    float(row[key])
            for key in integers:
                int(row[key])
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not {what} ({exc}): move it away or write into another "
                        "folder") from None
    return rows


def write_table(path, rows, columns):
    """``rows`` (dicts with the keys ``columns``) as a .json list or a .csv table, by the
    extension of ``path``, atomically. CSV cells: None is empty, a float its exact ``repr``, a
    string as it is; JSON keeps the values."""
    rows = list(rows)
    if path.lower().endswith(".json"):
        atomic_write(path, lambda fh: json.dump([{k: r[k] for k in columns} for r in rows], fh,
                                                indent=1))
        return

    def write(fh):
        w = csv.DictWriter(fh, list(columns), extrasaction="ignore")
        w.writeheader()
        w.writerows({k: _cell(r[k]) for k in columns} for r in rows)
    atomic_write(path, write, newline="")


def _cell(value):
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, float) else value


def files_in(folder, extensions):
    """The files directly in ``folder`` whose names end with one of ``extensions`` (any case),
    sorted; no glob (``[`` in a path is just a character), no sub-folder named like a file."""
    return sorted(os.path.join(folder, f) for f in os.listdir(folder)
                  if f.lower().endswith(extensions) and os.path.isfile(os.path.join(folder, f)))


def file_identity(path):
    """What identifies an input file for "is this the same work": its absolute path, size and
    modification time (a retrained checkpoint at the same path is another file)."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def same_work(key_path, key, rows_exist, what):
    """Resume only identical work: ``key`` (a JSON-able dict: checkpoint, data, protocol,
    options) is stored beside the rows it produced; rows made by other work, or by work of
    unknown kind (no key beside them), are never taken as done: one error line instead, naming
    what differs. Writes the key when there is none yet."""
    if os.path.isfile(key_path):
        try:
            with open(key_path, encoding="utf-8") as fh:
                old = json.load(fh)
        except (OSError, ValueError):
            raise UserError(f"{key_path} is not a key this project wrote: move the folder's rows "
                            "away or use another output folder") from None
        normal = json.loads(json.dumps(key))  # tuples -> lists, as stored
        if old != normal:
            field = next((k for k in sorted(set(old) | set(normal)) if old.get(k) != normal.get(k)),
                         "?")
            raise UserError(f"{what} holds rows of other work ({field}: {old.get(field)!r} there, "
                            f"{normal.get(field)!r} now): use another output folder")
        return
    if rows_exist:
        raise UserError(f"{what} holds rows without a record of the work that made them (an "
                        "earlier release's): use another output folder")
    atomic_write_text(key_path, json.dumps(key, indent=1, sort_keys=True) + "\n")
