"""Small data and configs shared by the tests of training, safety and inputs."""
import os
import shutil

import yaml

from trainer.hooks import Hook

SIZE = 64  # at 32 px the last feature map is 1 x 1: batch norm needs a batch of 2 there
TF = [{"name": "Resize", "params": {"height": SIZE, "width": SIZE}},
      {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]


def image_list_tree(demo_root, dest, videos=3, frames=2, corrupt=0):
    """A real/ fake/ ImageList tree copied from the demo's frames: ``videos`` videos per class of
    ``frames`` frames, plus ``corrupt`` unreadable files per class."""
    ff = os.path.join(demo_root, "faceforensics")
    src = {"real": os.path.join(ff, "original_sequences", "youtube", "c23", "images"),
           "fake": os.path.join(ff, "manipulated_sequences", "Deepfakes", "c23", "images")}
    for kind, folder in src.items():
        for v, video in enumerate(sorted(os.listdir(folder))[:videos]):
            out = os.path.join(dest, kind, f"v{v}")
            os.makedirs(out, exist_ok=True)
            frames_in = sorted(os.listdir(os.path.join(folder, video)))[:frames]
            for f in frames_in:
                shutil.copy(os.path.join(folder, video, f), os.path.join(out, f))
        for c in range(corrupt):
            os.makedirs(os.path.join(dest, kind, "bad"), exist_ok=True)
            with open(os.path.join(dest, kind, "bad", f"{c}.png"), "wb") as fh:
                fh.write(b"\x89PNG\r\n\x1a\n broken")
    return str(dest)


def write_config(tmp_path, train_root, val_root=None, steps=2, val_steps=2, batch=2, extra=None,
                 data=None, model=None, run_id="t", branch_extra=None):
    """A model config + dataset file for the ImageList layout; returns the config's path."""
    ds = {"train_cfg": {"root": str(train_root), "log_steps": 1, "val_steps": val_steps,
                        "num_steps": steps, "transforms": TF, **(branch_extra or {})},
          "val_cfg": {"root": str(val_root or train_root), "transforms": TF}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce", "pretrained": False, **(model or {})},
           "config": {"id": run_id, "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                      **(extra or {})},
           "data": {"name": "ImageList", "file": str(tmp_path / "ds.yml"),
                    "train_batch_size": batch, "val_batch_size": 4, "val_branch": "val_cfg",
                    "num_workers": 0, **(data or {})}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "cfg.yml")


def hopper_video(path, frames=4):
    """A short MJPEG video of matplotlib's Grace Hopper photograph moving over a grey canvas: a
    real face that dlib finds in every frame."""
    import cv2
    import matplotlib.cbook
    import numpy as np
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (180, 210))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 300))
    for f in range(frames):
        canvas = np.full((300, 400, 3), 90, np.uint8)
        canvas[40 + 5 * f:250 + 5 * f, 60 + 10 * f:240 + 10 * f] = face
        writer.write(canvas)
    writer.release()
    return str(path)


class NanAt(Hook):
    """Makes the loss of the ``call``-th step NaN (on ``rank`` only, or on every rank): the head's
    bias is NaN for that step and restored before the next one."""

    def __init__(self, call, rank=None):
        self.call, self.rank, self.calls, self.saved = call, rank, 0, None

    def before_step(self, trainer):
        self.calls += 1
        bias = trainer.model.fc.bias
        if self.saved is not None:
            bias.data.copy_(self.saved)
            self.saved = None
        if self.calls == self.call and self.rank in (None, trainer.rank):
            self.saved = bias.detach().clone()
            bias.data.fill_(float("nan"))


class Record(Hook):
    """Records what a test asks for at each moment: ``after_step``'s loss totals and
    ``after_validation``'s learning rate."""

    def __init__(self):
        self.losses, self.lrs = [], []

    def after_step(self, trainer, losses):
        self.losses.append(float(losses["total"]))

    def after_validation(self, trainer, metrics):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
