"""The measured figures the docs quote, kept in one file: docs/figures.json.

Each entry is one measurement run, named by what measured it (a sub-command of
``tools/benchmark.py``, which writes its entry with ``--figures``; or a name of its own for a run
recorded by hand from a tool's printed output):

    "backends": {
      "command": "python tools/benchmark.py backends --repeats 5 ...",
      "measured": "when and on what",
      "figures": {"api_bf16_x": 2.26, ...},
      "quotes": {"README.md": ["299 px {api_bf16_x:.2f}x as fast through the API", ...]}
    }

A quote is a piece of a doc with its figures as ``str.format`` fields (``{key:.2f}``,
``{key:,}``, ``{key[0]}`` for a list; ``{key:.1e}`` writes 1.6e-5, as the docs do): filled with
the entry's figures, it must appear in the doc (spaces and line breaks count as one space). A doc
whose figure differs from the recorded one fails tests/test_docs.py, and so does a new run
recorded with ``--figures`` until the docs quote its figures.
"""
import datetime
import json
import os
import platform
import re
import string

from errors import UserError
from fileio import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FILE = os.path.join(ROOT, "docs", "figures.json")


def load(path=FILE):
    """The runs of a figures file; a file that is not one is one error line."""
    with open(path, encoding="utf-8") as fh:
        try:
            data = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{path}: not a figures file ({exc})") from None
    if not isinstance(data, dict) or not all(isinstance(e, dict) and "figures" in e
                                             for e in data.values()):
        raise UserError(f"{path}: not a figures file (expected runs, each with its figures)")
    return data


def machine():
    """When and on what a run is measured: the date, the CPU cores, the GPU if any, torch."""
    import torch
    gpu = (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (f"{datetime.date.today().isoformat()}, {cores} CPU cores ({platform.machine()})"
            f"{gpu}, torch {torch.__version__}")


def record(path, name, command, figures):
    """The run ``name``'s entry of the figures file ``path``: its command, when and on what it was
    measured, and ``figures`` (replacing the last run's; the quotes are kept). A file that does
    not exist yet is made."""
    data = load(path) if os.path.exists(path) else {}
    entry = data.get(name, {})
    data[name] = {"command": " ".join(command), "measured": machine(), "figures": figures,
                  "quotes": entry.get("quotes", {})}
    text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
    atomic_write(path, lambda fh: fh.write(text))


class _Quote(string.Formatter):
    def format_field(self, value, spec):
        text = format(value, spec)
        if spec.endswith("e"):  # 1.6e-05 -> 1.6e-5
            text = re.sub(r"e([+-])0*(\d)", lambda m: "e" + m.group(1).strip("+") + m.group(2),
                          text)
        return text


def fill(template, figures):
    """``template`` with its fields filled from ``figures``."""
    return _Quote().vformat(template, (), figures)


def flat(text):
    return re.sub(r"\s+", " ", text)


def quotes(data):
    """``(run, doc, template, filled)`` of every quote; ``filled`` is None where the template
    names a figure the run has not (or is not a format string)."""
    out = []
    for name, entry in data.items():
        for doc, templates in entry.get("quotes", {}).items():
            for template in templates:
                try:
                    filled = fill(template, entry["figures"])
                except (KeyError, IndexError, ValueError):
                    filled = None
                out.append((name, doc, template, filled))
    return out


def disagreements(data, read):
    """One line per quote whose filled text is not in its doc (``read(doc)`` gives a doc's text)."""
    bad, texts = [], {}
    for name, doc, template, filled in quotes(data):
        if filled is None:
            bad.append(f"{name}: {doc}: {template!r} names a figure the run has not")
            continue
        if doc not in texts:
            texts[doc] = flat(read(doc))
        if flat(filled) not in texts[doc]:
            bad.append(f"{doc} does not say {flat(filled)!r} (figures of {name} in "
                       "docs/figures.json): the doc or the record is out of date")
    return bad
