"""Plain helpers the tests share: the project's paths, small data, configs, media made here,
checkpoints of random weights and a served page (tests/conftest.py puts this folder on
``sys.path``; tests import from here, never from one another)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import forkrun
import numpy as np
import torch
import yaml

from trainer.hooks import Hook

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"  # numbers from the original release, shipped with the tests
PLUGIN = os.path.join(ROOT, "tests", "plugins", "tiny_detector.py")  # a user's own detector

SIZE = 64  # at 32 px the last feature map is 1 x 1: batch norm needs a batch of 2 there
TF = [{"name": "Resize", "params": {"height": SIZE, "width": SIZE}},
      {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
NORM = [{"name": "Resize", "params": {"height": 16, "width": 16}},  # small images, quick tests
        {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]


def cli(args, timeout=600, **kw):
    """``python <args>`` from the project's folder, its output captured (a CompletedProcess).
    A script's command runs in a process forked from one that has imported the heavy libraries
    (``forkrun``); with other keywords (``env``...), or ``fresh=True``, in a fresh interpreter."""
    fresh = kw.pop("fresh", False)
    if forkrun.ENABLED and not fresh and set(kw) <= {"input"} and str(args[0]).endswith(".py"):
        return forkrun.SERVER_PROCESS.run(args, ROOT, timeout=timeout, input=kw.get("input"))
    return subprocess.run([sys.executable] + list(args), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **kw)


def popen(args, stderr_to_stdout=False):
    """``subprocess.Popen([python] + args, cwd=ROOT, stdout=PIPE, stderr=PIPE (or STDOUT),
    text=True)`` of a script's command, forked as ``cli`` forks one; a fresh interpreter with
    SIGINT at its default (``default_sigint``) where forking is off."""
    if forkrun.ENABLED:
        return forkrun.SERVER_PROCESS.popen(args, ROOT, stderr_to_stdout=stderr_to_stdout)
    return subprocess.Popen([sys.executable] + list(args), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT if stderr_to_stdout else subprocess.PIPE,
                            text=True, preexec_fn=default_sigint)


def torchrun(ranks, port, argv, env=None, timeout=400):
    """``torchrun --nproc_per_node=RANKS --master_port=PORT SCRIPT ARGS...`` (``argv``: the
    script and its arguments) from the project's folder, its output captured (a
    CompletedProcess). Forked as ``cli`` forks a command: the launcher, and each worker through
    its stand-in (``tests/forked_worker.py``); fresh interpreters where forking is off."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    launch = ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={port}"]
    if not forkrun.ENABLED:
        return subprocess.run([sys.executable, *launch, *argv], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    env["RECCE_TESTS_RELAY"] = forkrun.SERVER_PROCESS.relay()
    return forkrun.SERVER_PROCESS.run(
        [*launch, os.path.join(ROOT, "tests", "forked_worker.py"), *argv], ROOT, timeout=timeout,
        env=env)


def forked_runner(run_child):
    """``experiments.reproduce.run_child`` as the tests run it: a ``python <script> ...`` command
    is forked as ``cli`` forks one (its output on stderr), anything else (torchrun) goes to
    ``run_child``; returns the exit status. The runner itself (process groups, signals) has tests
    of its own."""
    def run(cmd, cwd=None):
        if not (forkrun.ENABLED and cmd[0] == sys.executable and str(cmd[1]).endswith(".py")):
            return run_child(cmd, cwd=cwd)
        proc = forkrun.SERVER_PROCESS.run(cmd[1:], cwd or os.getcwd(), timeout=600)
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode
    return run


# ---------------------------------------------------------------- checkpoints, weights
def write_checkpoint(path, model="Recce", config=None, spec=None, seed=0, **extra):
    """A checkpoint of a randomly initialised detector, as this project saves one:
    ``{"model": state_dict, "config": config, "input_spec": spec, **extra}``.

    ``model``: a registered detector's name (built with ``pretrained: False``) or a module whose
    weights are saved; ``config``: the saved config (left out when None: a checkpoint that names
    no detector); ``spec``: an ``InputSpec``, or a side in pixels for a square spec of mean and
    std 0.5 (left out when None); ``seed``: the weights' seed (the caller's random state is left
    as it was); ``extra``: more top-level entries (``step``, ``calibration``, ``face_crop``...).
    Returns the path as text."""
    from model import InputSpec, build_detector
    if isinstance(model, str):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = build_detector({"name": model, "pretrained": False})
    state = {"model": model.state_dict()}
    if config is not None:
        state["config"] = config
    if spec is not None:
        state["input_spec"] = (InputSpec((spec, spec)) if isinstance(spec, int) else spec).to_dict()
    torch.save({**state, **extra}, path)
    return str(path)


def deepfakebench_file(path, recce=None):
    """A file shaped as DeepfakeBench's RecceDetector saves it: DataParallel's ``module.``, the
    network under ``model.`` with a two-logit head, an unused Xception under ``backbone.``
    (``recce``: the network whose weights it holds; a Recce of seed 0 when None)."""
    if recce is None:
        from model import Recce
        torch.manual_seed(0)
        recce = Recce()
    state = {f"module.model.{k}": v for k, v in recce.state_dict().items()
             if not k.startswith("fc.")}
    w, b = recce.state_dict()["fc.weight"], recce.state_dict()["fc.bias"]
    state["module.model.fc.weight"] = torch.cat([torch.zeros_like(w), w])
    state["module.model.fc.bias"] = torch.cat([torch.zeros_like(b), b])
    state["module.backbone.conv1.weight"] = torch.zeros(32, 3, 3, 3)
    torch.save(state, path)
    return str(path)


def fill_by_rule(model, seed, tsv):
    """The weight rule of the reference fixtures (tests/fixtures/README.md)."""
    names = [line.split("\t")[0] for line in open(tsv).read().splitlines()[1:]]
    g = torch.Generator().manual_seed(seed)
    current = model.state_dict()
    state = {}
    for name in names:
        shape = current[name].shape
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
            continue
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("running_var"):
            v = 1 + 0.1 * r.abs()
        elif name.endswith("running_mean"):
            v = 0.1 * r
        elif name.endswith("weight") and len(shape) == 1:
            v = 1 + 0.1 * r
        elif name.endswith("bias"):
            v = 0.1 * r
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            v = r / fan_in ** 0.5
        state[name] = v.float()
    model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------- images and data trees
def write_faces(folder, names=("0.png", "1.png"), shape=(40, 36), seed=0):
    """Images of random pixels standing in for face crops, one per name (a name may hold a
    subfolder); ``shape``: (height, width) of them all, or a list of one per name."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        h, w = shape[i] if isinstance(shape, list) else shape
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    return folder


def noise_image(path, value=128, size=20):
    """One square image of random pixels (``value`` seeds them) at ``path``, folders made."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(value)
    cv2.imwrite(str(path), rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def ff_tree(root):
    """Three FF++ splits of one pair each, two frames per video, through the index builder."""
    from dataset.faceforensics import build_faceforensics
    splits = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}
    os.makedirs(root / "splits")
    for split, pairs in splits.items():
        (root / "splits" / f"{split}.json").write_text(json.dumps(pairs))
        for a, b in pairs:
            for v in (a, b):
                for f in range(2):
                    noise_image(root / f"original_sequences/youtube/c23/images/{v}/{f:04d}.png")
            for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
                for v in (f"{a}_{b}", f"{b}_{a}"):
                    for f in range(2):
                        noise_image(root / f"manipulated_sequences/{m}/c23/images/{v}/{f:04d}.png")
    return build_faceforensics(str(root), str(root / "splits"), "c23")


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


def tiny_data(root):
    """Six real (r_*) and six fake (f_*) images of noise around two grey levels, of three
    heights: data the test plugin's TinyLayout reads (the first letter is the label)."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    for kind, base in (("r", 70), ("f", 170)):
        for v in range(3):
            for f in range(2):
                img = np.clip(rng.normal(base, 25, (40 + 8 * v, 36, 3)), 0, 255).astype(np.uint8)
                cv2.imwrite(os.path.join(root, f"{kind}_{v}_{f}.png"), img)
    return root


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


# ---------------------------------------------------------------- faces in photos and videos
def grace_hopper(size=None):
    """matplotlib's photograph of Grace Hopper (BGR), resized to ``size`` = (width, height):
    a real face that dlib finds."""
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    return face if size is None else cv2.resize(face, size)


def hopper_video(path, frames=4):
    """A short MJPEG video of matplotlib's Grace Hopper photograph moving over a grey canvas: a
    real face that dlib finds in every frame."""
    face = grace_hopper((180, 210))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (400, 300))
    for f in range(frames):
        canvas = np.full((300, 400, 3), 90, np.uint8)
        canvas[40 + 5 * f:250 + 5 * f, 60 + 10 * f:240 + 10 * f] = face
        writer.write(canvas)
    writer.release()
    return str(path)


PEOPLE_CANVAS = (300, 560)  # height, width


def people_video(path, frames=6, faces=2, fps=10, fourcc="MJPG"):
    """A video of ``faces`` people (Grace Hopper's photograph, twice) moving over a grey canvas."""
    face = grace_hopper((150, 175))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps,
                             (PEOPLE_CANVAS[1], PEOPLE_CANVAS[0]))
    for f in range(frames):
        canvas = np.full(PEOPLE_CANVAS + (3,), 90, np.uint8)
        for k in range(faces):
            oy, ox = 30 + 2 * (f % 40), 20 + 290 * k + 2 * (f % 40)
            canvas[oy:oy + face.shape[0], ox:ox + face.shape[1]] = face
        writer.write(canvas)
    writer.release()
    return str(path)


def portrait_photo(path):
    """A photo of one person: Grace Hopper's photograph on a grey canvas."""
    canvas = np.full((320, 300, 3), 120, np.uint8)
    face = grace_hopper((150, 175))
    canvas[60:60 + face.shape[0], 60:60 + face.shape[1]] = face
    cv2.imwrite(str(path), canvas)
    return str(path)


# ---------------------------------------------------------------- the page's server
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(ckpt, data, port, *extra):
    """``python serve.py`` in a process of its own; returns it once the page answers."""
    import urllib.request
    proc = popen(["serve.py", "--checkpoint", ckpt, "--data", str(data), "--port", str(port),
                  *extra], stderr_to_stdout=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve.py stopped: {proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if json.load(r)["workers"]:
                    return proc
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("serve.py did not answer")


# ---------------------------------------------------------------- the user's files
def sentinels(*paths):
    """Files of the user's ("user data"), folders made; returns the paths."""
    for p in paths:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as fh:
            fh.write("user data")
    return paths


def intact(paths):
    """Whether every file ``sentinels`` made still holds the user's data."""
    return all(open(p).read() == "user data" for p in paths)


# ---------------------------------------------------------------- training hooks
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


def default_sigint():
    """``preexec_fn`` of a child that a test stops with Ctrl-C: SIGINT back at its default, so
    that Python turns it into KeyboardInterrupt, whatever the test run inherited (a background
    job of a non-interactive shell starts with SIGINT ignored, and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
