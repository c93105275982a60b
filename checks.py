"""Checking a value against the kind of its key: the one set of rules for config files, a
detector's own arguments (``model:`` and ``loss:`` sections) and a checkpoint's saved config.

``check_value(where, value, kind)`` returns the value to use or raises a UserError naming
``where`` (the key, the flag or the file), the value and what is accepted.

``check_argument(name, value, kind)`` is the same rule for a keyword argument of the library
(the Python API): no text taken for a number, and the error names the argument.

``Key(path, default, kind, doc)`` declares one setting once: its default, its kind (which names
its bounds, e.g. "batch_size": 1 to ``MAX_BATCH_SIZE``; ``bounds`` narrows a key further) and
what it is. The tables of keys are built from it: ``trainer.config.KEYS`` (the config file's
trainer keys: ``DEFAULTS`` and ``SCHEMA`` derive from it), ``faces.arguments.KEYWORDS`` (the
Python API's keywords, inference.py's flags and the page's form fields).

The bounds every door shares are named here: ``MAX_INPUT_SIZE``, the largest side of a model's
input (``-s`` / ``--image_size``, ``export.py --size``, the API's ``image_size`` and a
checkpoint's saved input spec), and the bounds of batch sizes, worker processes, pixel budgets,
frame counts, box sides and crop margins (config files, inference.py's flags and the API's
keywords alike).
"""
import datetime
import math
import numbers
import os
from dataclasses import dataclass

from errors import UserError

# the largest side of a model's input, in pixels: face crops are a few hundred pixels; a larger
# input is a mistyped value (or a memory error waiting to happen)
MAX_INPUT_SIZE = 2048
# images per forward pass: a larger batch fits no accelerator even at a small input
MAX_BATCH_SIZE = 65536
# worker processes (data loading): more than any machine has cores
MAX_WORKERS = 1024
# pixels of one image or video frame, and the longest side of a box: OpenCV decodes no larger
# image (its CV_IO_MAX_IMAGE_PIXELS and CV_IO_MAX_IMAGE_WIDTH / _HEIGHT)
MAX_PIXELS = 1 << 30
MAX_SIDE = 1 << 20
# frames of a video (a count to take or a step between them): 3.9 days at 30 fps
MAX_FRAMES = 10_000_000
# a face crop's side over the face box's: at 10 the face is a tenth of the crop
MAX_MARGIN = 10.0
# how a detector's forward runs when it scores (model.backends): every door offers these
def available_cores():
    """The cores this process may run on: its CPU affinity (a container's, taskset's or a
    scheduler's share), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(workers=0, processes=1):
    """Intra-op threads for one process: the cores it may use (``available_cores``), shared
    among the ``processes`` of one machine (torchrun's ranks, the page's workers), less one for
    each loader or decoding worker beside it; at least 1. More threads than free cores make every
    parallel operation wait for a thread that another process holds: on 2 shared cores the demo's
    training fell from 18 to 2 images/s beside one busy process with 2 threads, 11 with 1."""
    return max(1, available_cores() // max(1, int(processes)) - max(0, int(workers)))


# the named crop rules of faces.rules: how the faces of each published checkpoint's data were cut
CROP_RULES = ("deepfakebench", "ffpp", "recce", "box")
BACKENDS = ("torch", "onnxruntime", "auto")
PRECISIONS = ("fp32", "bf16", "auto")


def as_number(value):
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; take it as the number the user meant."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def _name(value):
    """Names written in a YAML file may have been read as numbers or dates: take them as text."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def check_value(where, value, kind, text_numbers=True):
    """``value`` of the key ``where`` against its ``kind``; returns the value to use.

    Kinds: a tuple of choices; "name", "run_id", "bool", "pretrained", "mapping", "list",
    "label_map"; integers "int", "posint", "nonneg_int" and the bounded ones of
    ``INTEGER_RANGES`` ("size": 1 to ``MAX_INPUT_SIZE``, "batch_size", "workers", "pixels",
    "frames", "side"); numbers "nonneg", "fraction" ([0, 1)), "probability" ([0, 1]), "positive"
    (finite, > 0), "margin" (> 0, at most ``MAX_MARGIN``), "finite". A trailing "?" also accepts
    None. Numbers are never NaN or infinite. Text that reads as a number is taken for it (YAML
    1.1 reads ``1e-4`` as text) unless ``text_numbers`` is false."""
    def bad(expected):
        raise UserError(f"{where}: expected {expected}, got {value!r}")

    if isinstance(kind, tuple):
        if value not in kind or isinstance(value, bool):
            raise UserError(f"{where}: {value!r} is not one of {list(kind)}")
        return value
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and optional:
        return None
    if kind in ("name", "run_id"):
        value = _name(value)
        if not isinstance(value, str) or not value.strip():
            bad("a name (text)")
        if kind == "run_id" and (value in (".", "..") or "/" in value or "\\" in value
                                 or "\0" in value or os.sep in value):
            raise UserError(f"{where}: {value!r} must be one folder name (no '/', not '.' or '..')")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            bad("true or false")
        return value
    if kind == "pretrained":
        if isinstance(value, bool):
            return value
        return check_value(where, value, "name")
    if kind in ("mapping",):
        if not isinstance(value, dict) or "name" not in value:
            bad("a mapping with a name, e.g. {name: adam, lr: 0.0002}")
        return value
    if kind == "list":
        if not isinstance(value, list):
            bad("a list")
        return value
    if kind == "label_map":
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and v in (0, 1) and not isinstance(v, bool)
                for k, v in value.items()):
            bad("a mapping of label names to 0 (real) or 1 (fake)")
        return value
    if text_numbers:
        value = as_number(value)
    if kind in INTEGER_KINDS:
        low, high, expected = INTEGER_RANGES.get(kind) or INTEGER_BOUNDS[kind]
        expected = f"{expected} from {low} to {high}" if high is not None else \
            f"{expected} of at least {low}" if low is not None else expected
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            bad("an integer")
        value = int(value)
        if (low is not None and value < low) or (high is not None and value > high):
            bad(expected)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        bad("a number")
    if kind not in NUMBER_KINDS:
        raise ValueError(f"check_value: unknown kind {kind!r} for {where}")
    low, high, expected = NUMBER_KINDS[kind]
    if not math.isfinite(value) or (low is not None and not low(value)) or \
            (high is not None and not high(value)):
        bad(expected)
    return value


# kind -> (lowest, highest, what is accepted)
INTEGER_RANGES = {
    "size": (1, MAX_INPUT_SIZE, "a size in pixels"),
    "batch_size": (1, MAX_BATCH_SIZE, "a batch size"),
    "workers": (0, MAX_WORKERS, "a number of worker processes"),
    "threads": (1, MAX_WORKERS, "a number of threads"),
    "pixels": (1, MAX_PIXELS, "a number of pixels"),
    "frames": (1, MAX_FRAMES, "a number of frames"),
    "side": (1, MAX_SIDE, "a side in pixels"),
}
INTEGER_BOUNDS = {"int": (None, None, "an integer"), "posint": (1, None, "an integer"),
                  "nonneg_int": (0, None, "an integer")}
INTEGER_KINDS = tuple(INTEGER_BOUNDS) + tuple(INTEGER_RANGES)
# kind -> (lower test, upper test, what is accepted)
NUMBER_KINDS = {
    "finite": (None, None, "a finite number"),
    "number": (None, None, "a finite number"),
    "nonneg": (lambda v: v >= 0, None, "a number of at least 0"),
    "positive": (lambda v: v > 0, None, "a positive finite number"),
    "fraction": (lambda v: v >= 0, lambda v: v < 1, "a number in [0, 1)"),
    "probability": (lambda v: v >= 0, lambda v: v <= 1, "a probability in [0, 1]"),
    "margin": (lambda v: v > 0, lambda v: v <= MAX_MARGIN,
               f"a number above 0 and at most {MAX_MARGIN:g} (1.3 is usual)"),
}


def check_argument(name, value, kind):
    """A keyword argument ``name`` of the library against its ``kind`` (as ``check_value``):
    returns the value to use. Text is never taken for a number (``"3"`` is not 3), a NumPy
    scalar is the number it holds, and the error starts with ``name`` and names it
    (``UserError.arg``), so that a command line can name its flag instead (``errors.flags``)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
        value = int(value)  # numpy.int64 and the like
    elif isinstance(value, numbers.Real) and not isinstance(value, (bool, int, float)):
        value = float(value)  # numpy.float32 and the like
    try:
        value = check_value(name, value, kind, text_numbers=False)
    except UserError as exc:
        raise UserError(str(exc), arg=name) from None
    return kind[kind.index(value)] if isinstance(kind, tuple) else value  # 1.0 -> the choice 1


def kind_of_default(default):
    """The kind (for ``check_value``) of an argument whose default is ``default``; None where any
    value goes (no default, or None)."""
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, int):
        return "int"
    if isinstance(default, float):
        return "number"
    if isinstance(default, str):
        return "name"
    return None


def accepted_arguments(func):
    """The keyword arguments ``func`` (a class: its constructor) takes, with their defaults
    (``inspect.Parameter.empty`` where it has none); None for a ``**kwargs`` catch-all."""
    import inspect
    params = inspect.signature(func).parameters
    out = {}
    for name, p in params.items():
        if p.kind == p.VAR_KEYWORD:
            return None
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name != "self":
            out[name] = p.default
    return out


def check_arguments(func, given, where, owner, kinds=None):
    """The arguments ``given`` (a mapping from a config section ``where``) for ``func``, owned by
    ``owner`` (e.g. "the detector Recce"): an unknown key, a missing required one or a value of
    the wrong kind is one UserError naming the key, the owner and what it accepts. Each value is
    checked against ``kinds`` (name -> kind) or else the kind of its default. Returns a new dict
    of the checked values."""
    import inspect
    if not isinstance(given, dict):
        raise UserError(f"{where}: expected a mapping of {owner}'s arguments, got {given!r}")
    accepted = accepted_arguments(func)
    kinds = kinds or {}
    out = {}
    for key, value in given.items():
        if accepted is not None and key not in accepted:
            raise UserError(f"{where}.{key}: {owner} takes no argument {key!r} (it takes: "
                            f"{', '.join(accepted) or 'none'})")
        default = accepted.get(key) if accepted else None
        kind = kinds.get(key) or kind_of_default(
            None if default is inspect.Parameter.empty else default)
        if kind is None or (value is None and default is None):
            out[key] = value
            continue
        try:
            out[key] = check_value(f"{where}.{key}", value, kind)
        except UserError as exc:
            raise UserError(f"{exc} ({owner}'s argument)") from None
    missing = [k for k, d in (accepted or {}).items()
               if d is inspect.Parameter.empty and k not in out]
    if missing:
        raise UserError(f"{where}: {owner} needs {', '.join(missing)} (missing)")
    return out


REQUIRED = object()  # the default of a key that must be given (a config's data.name)


@dataclass(frozen=True, eq=False)
class Key:
    """One setting, declared once. ``path``: where it is (``config.seed``; a keyword or a form
    field: its name); ``default`` (``REQUIRED``: it must be given); ``kind``: what
    ``check_value`` accepts, its bounds included; ``bounds``: ``(low, high)`` narrowing the kind
    (either None: open), for a key whose range no kind names; ``doc``: what it is, one line;
    ``shown``: the default as the docs' tables write it, where the value alone does not say it
    (``config.id``'s None is "a timestamp")."""
    path: str
    default: object = None
    kind: object = "name"
    doc: str = ""
    shown: str | None = None
    bounds: tuple | None = None

    @property
    def name(self):
        """The last part of the path: ``seed`` of ``config.seed``."""
        return self.path.rsplit(".", 1)[-1]

    def check(self, value, where=None, text_numbers=True):
        """``value`` against the kind and the bounds; returns the value to use or raises a
        UserError naming ``where`` (default: the path), the value and what is accepted."""
        where = where or self.path
        value = check_value(where, value, self.kind, text_numbers)
        if self.bounds is not None and value is not None and not isinstance(value, bool) and \
                isinstance(value, (int, float)):
            low, high = self.bounds
            if (low is not None and value < low) or (high is not None and value > high):
                noun = "an integer" if isinstance(value, int) else "a number"
                expected = f"{noun} from {low} to {high}" if None not in (low, high) else \
                    f"{noun} of at least {low}" if low is not None else \
                    f"{noun} of at most {high}"
                raise UserError(f"{where}: expected {expected}, got {value!r}")
        return value

    @property
    def keeps_text(self):
        """Whether a value of this key is text whatever it looks like (a run id 0012, a date,
        1e3): names, and choices that are all text."""
        return keeps_text(self.kind)

    def shown_default(self):
        """The default as the docs' tables write it: ``shown``, else the value in YAML's words
        (true, false, none, [], 2022)."""
        if self.shown is not None:
            return self.shown
        value = self.default
        if value is REQUIRED:
            return "required"
        if isinstance(value, bool):
            return "true" if value else "false"
        if value is None:
            return "none"
        if isinstance(value, (list, dict)):
            return "[]" if value == [] else "{}" if value == {} else repr(value)
        return str(value)


def keeps_text(kind):
    """Whether values of ``kind`` are text whatever they look like (see ``Key.keeps_text``)."""
    if isinstance(kind, tuple):
        return bool(kind) and all(isinstance(c, str) for c in kind)
    return kind.rstrip("?") in ("name", "run_id")


def nested_defaults(keys, prefix=""):
    """The defaults of ``keys`` (Key records under ``prefix``) as nested mappings by path:
    ``config.distribute.timeout`` is ``out["config"]["distribute"]["timeout"]``."""
    out = {}
    for key in keys:
        if not key.path.startswith(prefix):
            continue
        *parents, last = key.path[len(prefix):].split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = key.default
    return out


def named_entries(entries, where, form):
    """(label, entry) for each entry of a config list of ``{name, ...}`` mappings (transforms,
    hooks), ``label`` naming its place (``where[i]``); a list that is not one, or an entry
    without a name, is one UserError showing the expected ``form``."""
    if not isinstance(entries, list):
        raise UserError(f"{where}: expected a list of {form} entries, got {entries!r}")
    for i, entry in enumerate(entries):
        label = f"{where}[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise UserError(f"{label}: expected {form}, got {entry!r}")
        yield label, entry
