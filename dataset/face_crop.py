"""Which crop rule cut a dataset's faces (``checks.CROP_RULES``; faces.rules), as the data says
it: the ``manifest_meta.json`` that tools/extract_faces.py writes beside its crops (in the folder
above the video folders: ``<out>/<video>/<frame>`` or ``<out>/frames/<video>/<frame>``), and
DeepfakeBench's layout, whose frames its own preparation cut. train.py saves it in every
checkpoint (``face_crop``), and scoring raw media cuts faces by it."""
import json
import logging
import os

from checks import CROP_RULES

log = logging.getLogger("recce")
MANIFEST_META = "manifest_meta.json"


def _meta_folder(path):
    video = os.path.dirname(os.path.abspath(path))
    above = os.path.dirname(video)
    return os.path.dirname(above) if os.path.basename(above) == "frames" else above


def _rule_in(folder):
    try:
        with open(os.path.join(folder, MANIFEST_META), encoding="utf-8") as fh:
            meta = json.load(fh)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or "project_version" not in meta:
        return None
    rule = meta.get("crop_rule", "box")  # extractions before the rules were named cut by box
    return rule if rule in CROP_RULES else None


def face_crop_of(items, layout=None):
    """The crop rule of a dataset's frames (``items`` with ``.path``): the one every crop manifest
    found beside them names; ``deepfakebench`` for DeepfakeBench's layout where no manifest says
    otherwise; None when the data does not say or its manifests disagree (said on one line)."""
    folders = {_meta_folder(it.path) for it in items}
    rules = {}
    for folder in sorted(folders):
        rule = _rule_in(folder)
        if rule is not None:
            rules.setdefault(rule, folder)
    if len(rules) > 1:
        log.warning("the training frames were cut by different crop rules (%s): the checkpoint "
                    "names none", ", ".join(f"{r} in {f}" for r, f in sorted(rules.items())))
        return None
    if rules:
        return next(iter(rules))
    return "deepfakebench" if layout == "DeepfakeBench" else None
