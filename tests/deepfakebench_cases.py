"""DeepfakeBench's dataset JSON files in its published structure
(``{dataset: {label: {split: {video: {"label", "frames"}}}}}``, a compression level for the FF++
family), built here for the tests of its layout, its training loop, test.py and
tools/reproduce.py; and a test set whose folder names two methods share, with fixed scores."""
import json
import os
import shutil

import cv2
import numpy as np
import yaml


def _demo_frames(demo_root):
    ff = os.path.join(demo_root, "faceforensics")
    real = os.path.join(ff, "original_sequences", "youtube", "c23", "images")
    fake = os.path.join(ff, "manipulated_sequences", "Deepfakes", "c23", "images")

    def pick(folder):
        return [os.path.join(folder, v, f) for v in sorted(os.listdir(folder))
                for f in sorted(os.listdir(os.path.join(folder, v)))][:12]

    return pick(real), pick(fake)


def deepfakebench_tree(tmp_path, demo_root):
    """A DeepfakeBench tree: datasets/ with the frames, dataset_json/ with FaceForensics++.json
    (forward slashes) and Celeb-DF-v2.json (backslashes, no compression level). Returns (the
    branch keys that find it, frames per video)."""
    real, fake = _demo_frames(demo_root)
    root = tmp_path / "datasets"

    def place(files, rel):
        out = []
        for i, f in enumerate(files):
            dest = root / rel / f"{i:03d}.png"
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
            out.append(f"./datasets/{rel}/{i:03d}.png")
        return out

    def videos(label, files, prefix, n=2, backslash=False):
        vids = {}
        for v in range(n):
            paths = place(files, f"{prefix}/{v:03d}")
            if backslash:
                paths = [p.replace("/", "\\") for p in paths]
            vids[f"{v:03d}"] = {"label": label, "frames": paths}
        return vids

    ff = {"FaceForensics++": {
        "FF-real": {s: {c: videos("FF-real", real, f"FF/original/{c}/{s}")
                        for c in ("c23", "c40")} for s in ("train", "test")},
        "FF-DF": {s: {c: videos("FF-DF", fake, f"FF/Deepfakes/{c}/{s}") for c in ("c23", "c40")}
                  for s in ("train", "test")}}}
    cdf = {"Celeb-DF-v2": {
        "CelebDFv2_real": {"test": videos("CelebDFv2_real", real, "CDF/real", backslash=True)},
        "CelebDFv2_fake": {"test": videos("CelebDFv2_fake", fake, "CDF/fake", backslash=True)}}}
    folder = root / "dataset_json"  # where tools/reproduce.py --data-root deepfakebench=DIR looks
    folder.mkdir()
    (folder / "FaceForensics++.json").write_text(json.dumps(ff))
    (folder / "Celeb-DF-v2.json").write_text(json.dumps(cdf))
    assert len(real) == len(fake) == 12, (len(real), len(fake))
    return {"dataset_json_folder": str(folder), "root": str(root)}, len(real)


def png(path):
    """A small grey PNG at ``path``, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))


# FF++ test split as DeepfakeBench's JSON lists it: three real videos; Deepfakes and
# NeuralTextures share the folder names 000_001 and 001_000; FaceSwap's 002 shares its name with a
# real video. Probability of each frame (fixed here, the model is not what is tested):
PROBS = {("original", "000"): [0.2, 0.4], ("original", "001"): [0.7],
         ("FaceSwap", "002"): [0.95], ("original", "002"): [0.1],
         ("Deepfakes", "000_001"): [0.9], ("NeuralTextures", "000_001"): [0.35],
         ("Deepfakes", "001_000"): [0.8], ("NeuralTextures", "001_000"): [0.5]}
LABEL_OF = {"original": "FF-real", "Deepfakes": "FF-DF", "NeuralTextures": "FF-NT",
            "FaceSwap": "FF-FS"}


def shared_names_tree(tmp_path):
    """PROBS's test split as DeepfakeBench's JSON and frames, and a test.py config of it
    (``tmp_path / "c.yml"``)."""
    root = tmp_path / "datasets"
    data = {}
    for (method, video), probs in PROBS.items():
        frames = []
        for n in range(len(probs)):
            png(root / "FF" / method / "c23" / "frames" / video / f"{n:03d}.png")
            frames.append(f"./datasets/FF/{method}/c23/frames/{video}/{n:03d}.png")
        label = LABEL_OF[method]
        data.setdefault(label, {"test": {"c23": {}}})["test"]["c23"][video] = {
            "label": label, "frames": frames}
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "FaceForensics++.json").write_text(json.dumps({"FaceForensics++": data}))
    ds = {"test_cfg": {"dataset_json_folder": str(tmp_path / "j"), "root": str(root),
                       "dataset": "FaceForensics++", "split": "test"}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce"}, "data": {"name": "DeepfakeBench", "num_workers": 0,
                                             "file": str(tmp_path / "ds.yml")}}))
    return tmp_path


def fixed_scores(monkeypatch):
    """test.py without a network: the checkpoint is a stand-in, each frame's probability is
    PROBS's (by its method and folder)."""
    import trainer.evaluation_report as report
    from model import InputSpec

    class Stand:
        spec = InputSpec((16, 16))

    def evaluate(model, loader, device, amp, bad):
        items = loader.dataset.items
        probs = []
        for it in items:
            parts = it.path.replace(os.sep, "/").split("/")
            probs.append(PROBS[(parts[-5], parts[-2])][int(parts[-1][:3])])
        p = np.asarray(probs)
        return {"index": np.arange(len(items)), "label": np.array([it.label for it in items]),
                "prob": p, "logit": np.log(p / (1 - p)), "loss": np.zeros(len(items)),
                "video": [it.video for it in items]}
    monkeypatch.setattr(report, "load_detector", lambda *a, **k: Stand())
    monkeypatch.setattr(report, "evaluate", evaluate)
