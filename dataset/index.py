"""Reading index files: the original's pickles (safely), CSV and JSON lines."""
import csv
import io
import json
import os
import pickle
import zipfile

import torch

from errors import UserError

SAFE_TYPES = (list, tuple, str, int, bool, float, type(None))


class _NoGlobals(pickle.Unpickler):
    """Admits only the builtin containers and scalars that pickle encodes without any global."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _check_plain(obj, path):
    stack = [obj]
    while stack:
        item = stack.pop()
        if not isinstance(item, SAFE_TYPES):
            raise UserError(f"index file {path}: unexpected {type(item).__name__} inside")
        if isinstance(item, (list, tuple)):
            stack.extend(item)
    return obj


def load_pickle_index(path: str):
    """A list written with ``torch.save`` or ``pickle.dump``, read without executing any code.

    A file whose payload names any function or class (which is how a pickle runs a command) is
    refused with a UserError naming it.
    """
    if not os.path.isfile(path):
        raise UserError(f"index file not found: {path}")
    with open(path, "rb") as fh:
        data = fh.read()
    if zipfile.is_zipfile(io.BytesIO(data)) or data[:7] == b"\x80\x02\x8a\nl\xfc\x9c":
        try:
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"index file {path} is not a plain list of paths and labels; refused "
                            f"to unpickle it ({' '.join(str(exc).split())[:200]})") from None
    else:
        try:
            obj = _NoGlobals(io.BytesIO(data)).load()
        except Exception as exc:  # noqa: BLE001
            raise UserError(f"index file {path} is not a plain list of paths and labels; refused "
                            f"to unpickle it ({exc})") from None
    return _check_plain(obj, path)


def save_pickle_index(obj, path: str):
    """Write an index the way the original did (``torch.save``), atomically."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def read_table_index(path: str):
    """CSV with header ``path,label[,video][,method]`` or JSON lines with those keys -> dicts."""
    if not os.path.isfile(path):
        raise UserError(f"index file not found: {path}")
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        if path.endswith((".jsonl", ".json")):
            for n, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{path}:{n}: not a JSON line ({exc})") from None
        else:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
                raise UserError(f"{path}: CSV needs a header with 'path' and 'label' columns, "
                                f"got {reader.fieldnames}")
            rows = list(reader)
    for n, row in enumerate(rows, 1):
        if "path" not in row or "label" not in row:
            raise UserError(f"{path}: entry {n} lacks 'path' or 'label': {row}")
        try:
            row["label"] = int(row["label"])
        except (TypeError, ValueError):
            raise UserError(f"{path}: entry {n} has label {row['label']!r}; expected 0 or 1") from None
        if row["label"] not in (0, 1):
            raise UserError(f"{path}: entry {n} has label {row['label']}; expected 0 (real) or 1 (fake)")
    return rows
