"""Public RECCE checkpoints: what is known of them (config/weights.yml), and what a file is.

    python tools/weights.py --list
    python tools/weights.py --check path/to/recce_best.pth
    python tools/weights.py --check runs/Mine/x/best_model_100.bin --import my_detector.py

``--check`` reads the file without executing code from it (``--trust`` for one that needs full
unpickling), names its kind (this project's, the original release's, DeepfakeBench's, a bare
state dict), its architecture and heads, the input it expects, the catalogue entry it matches (by
sha256 where one is published, else by kind, said as such) and the command that scores with it,
with the ``--import`` that a detector of one's own needs (``--import`` here registers it, as
inference.py's does). Nothing is downloaded.
"""
import argparse
import os
import shlex
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from errors import UserError, run_cli

CATALOGUE = os.path.join(ROOT, "config", "weights.yml")
KINDS = {"project": "a checkpoint of this project's train.py",
         "original": "the original release's training checkpoint (.bin)",
         "deepfakebench": "DeepfakeBench's RecceDetector state dict",
         "state_dict": "a bare state dict (model parameters only)"}


def load_catalogue(path=CATALOGUE):
    import yaml
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
        raise UserError(f"{path}: expected a 'weights' mapping")
    return data["weights"]


def list_lines(catalogue):
    lines = []
    for name, e in catalogue.items():
        spec = e["input"]
        lines += [f"{name}: {e['what']}",
                  f"  published: {e['published']}",
                  f"  trained on: {e['trained_on']}",
                  f"  input: {spec['size']} px ({spec['interpolation']}), mean {spec['mean']}, "
                  f"std {spec['std']}",
                  f"  classes: {e['classes']}",
                  f"  sha256: {e['sha256'] or 'not published'}",
                  f"  score with: {e['score_with']}", ""]
    return lines[:-1]


def _architecture(state, path, heads):
    """The registered detector whose state dict this file's weights fill exactly, or None."""
    from model import DETECTORS, build_detector
    from model.checkpoint import extract_state_dict
    weights = extract_state_dict(state, path, num_classes=heads)
    for name in DETECTORS:
        try:
            det = build_detector({"name": name, "pretrained": False, "num_classes": heads})
        except Exception:  # noqa: BLE001 - a user's detector that needs other arguments
            continue
        expected = det.state_dict()
        if set(expected) == set(weights) and all(
                expected[k].shape == weights[k].shape for k in expected):
            return name
    return None


def check(path, catalogue, trusted=False):
    """What ``path`` is, as a dict (see the module's docstring)."""
    from fileio import sha256_of
    from model import DETECTORS
    from model.checkpoint import (
        checkpoint_face_crop,
        checkpoint_flavour,
        checkpoint_num_classes,
        checkpoint_spec,
        load_checkpoint,
        saved_model_section,
    )
    state = load_checkpoint(path, trusted=trusted)
    flavour = checkpoint_flavour(state)
    heads = checkpoint_num_classes(state, path)
    arch = saved_model_section(state).get("name") or _architecture(state, path, heads)
    digest = sha256_of(path)
    by_digest = [n for n, e in catalogue.items() if e.get("sha256") and e["sha256"] == digest]
    by_kind = [n for n, e in catalogue.items() if e.get("flavour") == flavour]
    if by_digest:
        match = f"{by_digest[0]} (sha256 matches)"
    elif by_kind and arch == "Recce":
        match = (f"unknown by digest; of the kind of {', '.join(by_kind)} (no published sha256 "
                 "to confirm which)")
    else:
        match = "unknown"
    spec = source = None
    if arch in DETECTORS:
        spec, source = checkpoint_spec(state, DETECTORS.get(arch), path)
    flag = "-b" if flavour in ("project", "original", "deepfakebench") else "-w"
    command = f"python inference.py {flag} {shlex.quote(path)} -f FACES"
    if flavour in ("state_dict",) and arch and arch != "Recce":
        command += f" --model {shlex.quote(arch)}"
    imports = needed_imports(arch, state)
    command += "".join(f" --import {shlex.quote(i)}" for i in imports)
    if not arch or (arch not in DETECTORS and not imports):
        command = None  # it could not run: no detector known here fits the weights
    return {"file": path, "sha256": digest, "size_mb": os.path.getsize(path) / 2 ** 20,
            "kind": flavour, "architecture": arch, "registered": arch in DETECTORS,
            "heads": heads, "spec": spec, "spec_source": source, "match": match,
            "imports": imports, "command": command,
            "face_crop": checkpoint_face_crop(state, path),
            "crop_hint": flavour in ("original", "state_dict") and arch == "Recce"}


def needed_imports(arch, state):
    """The ``--import`` entries another process needs to know the detector ``arch``: none for the
    project's own (the ``model`` package registers them); the module that registered it in this
    one (a file by its absolute path); for one not registered here, the imports its run saved
    (when their files are on this machine)."""
    from model import DETECTORS
    from registry import import_entry
    if arch in DETECTORS:
        origin = DETECTORS.origin(arch)
        if origin is None or origin.split(".")[0] == "model":
            return []
        entry = import_entry(origin)
        return [entry] if entry else []
    saved = ((state.get("config") or {}).get("config") or {}).get("imports") \
        if isinstance(state, dict) else None
    saved = [str(i) for i in saved or []]
    return saved if all(os.path.isfile(i) for i in saved if i.endswith(".py")) else []


def _architecture_text(info):
    if not info["architecture"]:
        return "unknown (no registered detector fits its weights)"
    if not info["registered"]:
        return (f"{info['architecture']}, not registered here (pass --import with the module or "
                "file that registers it)")
    return info["architecture"]


def check_lines(info):
    heads = ("1 logit: p_fake = sigmoid" if info["heads"] == 1
             else f"{info['heads']} logits: p_fake = softmax column 1")
    where = {"saved": "saved in the file", "config": "from the file's saved dataset config",
             "deepfakebench": "DeepfakeBench's RECCE recipe, from the file's kind",
             "default": "the detector's default: the file does not say"}
    lines = [f"file: {info['file']} ({info['size_mb']:.1f} MB, sha256 {info['sha256']})",
             f"kind: {KINDS.get(info['kind'], info['kind'])}",
             f"architecture: {_architecture_text(info)} ({heads})"]
    if info["spec"] is not None:
        lines.append(f"input: {info['spec'].describe()} ({where[info['spec_source']]})")
    command = info["command"] or ("no command: no detector known here fits its weights "
                                  "(--import the module or file that registers yours)")
    if info["face_crop"]:
        crop = (f"{info['face_crop']} (how its training faces were cut; inference.py --video / "
                "--detect cuts faces so, with no flag)")
    else:
        crop = "not stated: raw media is cut by the box rule" + (
            "; the original release trained on RetinaFace crops: --crop recce "
            "--detector_weights Resnet50_Final.pth cuts faces as it did"
            if info.get("crop_hint") else "")
    lines += [f"face crop: {crop}", f"catalogue: {info['match']}", f"score with: {command}"]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Public RECCE checkpoints: list them, recognise a file.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--list", action="store_true", help="the checkpoints config/weights.yml knows")
    g.add_argument("--check", metavar="FILE", help="what a checkpoint file is, and how to use it")
    p.add_argument("--trust", action="store_true",
                   help="allow a file that needs full unpickling (only from a trusted source)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module or .py file registering your own detector (as inference.py's "
                        "--import); repeatable")
    args = p.parse_args(argv)

    def body():
        from registry import import_modules
        catalogue = load_catalogue()
        if args.list:
            print("\n".join(list_lines(catalogue)))
            return 0
        import_modules(args.imports, where="--import")
        info = check(args.check, catalogue, args.trust)
        print("\n".join(check_lines(info)))
        return 0 if info["architecture"] and info["registered"] else 1
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
