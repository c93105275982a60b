"""The tests' shared set-up and fixtures. Plain helpers live in support modules beside this file
(helpers.py, crop_cases.py, deepfakebench_cases.py), which this file puts on ``sys.path``; a test
file imports from those, never from another test file or from this one."""
import os
import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
for _path in (str(TESTS), str(TESTS.parent)):  # the project first, then the support modules
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))

import helpers  # noqa: E402


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The demo dataset, made once per test session (a few seconds)."""
    from dataset.demo import make_demo_dataset
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_dataset(str(root))
    return str(root)


@pytest.fixture(scope="session")
def make_checkpoint():
    """A factory: ``make_checkpoint(path, model="Recce", config=None, spec=None, seed=0,
    **extra)`` writes a checkpoint of a randomly initialised detector (any registered one, or a
    module's weights) with the config, input spec and entries asked for, and returns its path
    (``helpers.write_checkpoint``)."""
    return helpers.write_checkpoint


@pytest.fixture(scope="session")
def make_faces():
    """A factory: ``make_faces(folder, names, shape=(40, 36), seed=0)`` writes a folder of images
    of random pixels standing in for face crops and returns it (``helpers.write_faces``)."""
    return helpers.write_faces


@pytest.fixture(scope="module")
def hopper_media(tmp_path_factory):
    """A short video of a real face (Grace Hopper's photograph) and a photo of its first frame:
    (video, photo)."""
    import cv2
    d = tmp_path_factory.mktemp("hopper_media")
    video = helpers.hopper_video(d / "clip.avi")
    cap = cv2.VideoCapture(video)
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(d / "photo.png"), frame)
    return video, str(d / "photo.png")


@pytest.fixture()
def serve_process():
    """A factory: ``serve_process(ckpt, data, *extra)`` starts ``python serve.py`` on a free port
    and returns (process, port) once the page answers; every process it started is stopped at
    the end of the test."""
    started = []

    def start(ckpt, data, *extra):
        port = helpers.free_port()
        started.append(helpers.start_server(ckpt, data, port, *extra))
        return started[-1], port
    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            proc.communicate(timeout=30)


@pytest.fixture()
def deepfakebench_json(tmp_path, demo_root):
    """DeepfakeBench's dataset JSON files and frames (``deepfakebench_cases.deepfakebench_tree``):
    (the branch keys that find them, frames per video)."""
    from deepfakebench_cases import deepfakebench_tree
    return deepfakebench_tree(tmp_path, demo_root)


@pytest.fixture()
def shared_names(tmp_path):
    """A DeepfakeBench test split whose folder names two methods share, and a test.py config of
    it (``deepfakebench_cases.shared_names_tree``)."""
    from deepfakebench_cases import shared_names_tree
    return shared_names_tree(tmp_path)
