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
        except Exception as exc:  # noqa: BLE001 - whatever refused it, the file is refused
            raise UserError(f"index file {path} is not a plain list of paths and labels; refused "
                            f"to unpickle it ({' '.join(str(exc).split())[:200]})") from None
    else:
        try:
            obj = _NoGlobals(io.BytesIO(data)).load()
        except Exception as exc:  # noqa: BLE001 - whatever refused it, the file is refused
            raise UserError(f"index file {path} is not a plain list of paths and labels; refused "
                            f"to unpickle it ({exc})") from None
    return _check_plain(obj, path)


def save_pickle_index(obj, path: str):
    """Write an index the way the original did (``torch.save``), atomically: through a temporary
    file of this process's own, renamed over ``path`` only once it is complete."""
    from fileio import atomic_write
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    atomic_write(path, lambda fh: torch.save(obj, fh), mode="wb")


def _label(value, where):
    """0 or 1, given as a number or as text; 0.9, 2, "yes" are refused."""
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1):
        return value
    raise UserError(f"{where} has label {value!r}; expected 0 (real) or 1 (fake)")


def read_table_index(path: str):
    """CSV with header ``path,label[,video][,method]`` or JSON lines with those keys -> dicts.

    The first bad entry is named with its line number: a malformed line, an empty path, a label
    other than 0 or 1. A UTF-8 byte-order mark (as spreadsheet programs write) is accepted.
    """
    if not os.path.isfile(path):
        raise UserError(f"index file not found: {path}")
    rows = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            if path.lower().endswith((".jsonl", ".json")):
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{path}:{n}: not a JSON line ({exc})") from None
                    if not isinstance(row, dict):
                        raise UserError(f"{path}:{n}: expected a JSON object with path and label")
                    rows.append((n, row))
            else:
                reader = csv.reader(fh)
                header = next(reader, None)
                if not header or not {"path", "label"} <= {h.strip() for h in header}:
                    raise UserError(f"{path}: CSV needs a header with 'path' and 'label' columns, "
                                    f"got {header}")
                header = [h.strip() for h in header]
                for values in reader:
                    n = reader.line_num
                    if not values or not "".join(values).strip():
                        continue
                    if len(values) != len(header):
                        raise UserError(f"{path}:{n}: {len(values)} fields, the header has "
                                        f"{len(header)} ({','.join(header)})")
                    rows.append((n, dict(zip(header, values))))
    except UnicodeDecodeError as exc:
        raise UserError(f"index file {path} is not UTF-8 text (byte {exc.start}): save it as "
                        "UTF-8") from None
    except csv.Error as exc:
        raise UserError(f"{path}: malformed CSV ({exc})") from None
    out = []
    for n, row in rows:
        where = f"{path}:{n}"
        if "path" not in row or "label" not in row:
            raise UserError(f"{where}: lacks 'path' or 'label': {row}")
        if not isinstance(row["path"], str) or not row["path"].strip():
            raise UserError(f"{where}: the path is empty or not text: {row['path']!r}")
        row["label"] = _label(row["label"], where)
        out.append(row)
    return out
