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
# under pytest-xdist each worker process takes one core's share; alone, the suite takes two
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // WORKERS))

import forkrun

import helpers


def pytest_collection_finish(session):
    if forkrun.ENABLED and len(session.items) > 50:  # a broad run: the server's imports run
        forkrun.SERVER_PROCESS.start()                # beside the first tests


def pytest_sessionfinish(session, exitstatus):
    forkrun.SERVER_PROCESS.close()


@pytest.fixture(autouse=True)
def _root_log_handlers():
    """The root logger's handlers as before each test: a run in the test's process (train.py's
    console and file handlers) leaves none behind, writing into a later test's closed capture."""
    import logging
    root = logging.getLogger()
    before = list(root.handlers)
    yield
    for handler in root.handlers:
        if handler not in before:
            handler.close()
    root.handlers[:] = before


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The demo dataset, made once per test session (a few seconds)."""
    from dataset.demo import make_demo_dataset
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_dataset(str(root))
    return str(root)


@pytest.fixture()
def image_list_cfg(tmp_path, demo_root):
    """The path of a training config (Recce, 2 steps at 64 px) and its dataset file, over an
    ImageList tree of the demo's frames in ``tmp_path / "d"`` (``helpers.write_config``)."""
    return helpers.write_config(tmp_path, helpers.image_list_tree(demo_root, tmp_path / "d"))


@pytest.fixture(scope="session")
def make_checkpoint():
    """A factory: ``make_checkpoint(path, model="Recce", config=None, spec=None, seed=0,
    **extra)`` writes a checkpoint of a randomly initialised detector (any registered one, or a
    module's weights) with the config, input spec and entries asked for, and returns its path
    (``helpers.write_checkpoint``)."""
    return helpers.write_checkpoint


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    """A Recce of seed 0 saved as training saves its best checkpoint (its step, best metric,
    optimizer and scheduler states; no config, no input spec): (path, the model in eval mode)."""
    from model import Recce
    path = helpers.write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best_model_7.bin",
                                    step=7, best_step=7, best_metric=0.5, eval_metric="AUC",
                                    optimizer={}, scheduler={})
    model = Recce().eval()
    model.load_state_dict(torch.load(path, weights_only=True)["model"])
    return path, model


@pytest.fixture(scope="module")
def bare_checkpoint(tmp_path_factory):
    """A Recce's weights and nothing else (no config, no input spec), as the original release
    saved them."""
    return helpers.write_checkpoint(tmp_path_factory.mktemp("bare") / "good.bin")


@pytest.fixture(scope="module")
def nan_checkpoint(tmp_path_factory):
    """A Recce's weights whose head's bias is NaN: weights a loader must refuse."""
    from model import Recce
    recce = Recce()
    with torch.no_grad():
        recce.fc.bias.fill_(float("nan"))
    return helpers.write_checkpoint(tmp_path_factory.mktemp("nan") / "nan.bin", recce)


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


@pytest.fixture(scope="module")
def moving_face_videos(tmp_path_factory):
    """A folder of two videos: ``hopper.avi``, Grace Hopper's photograph moving across 8 frames of
    560 x 720, and ``broken.mp4``, not a video. Returns (folder, dlib's box of the face in the
    photograph, the photograph's offset in each frame)."""
    import cv2
    import numpy as np
    dlib = pytest.importorskip("dlib")
    folder = tmp_path_factory.mktemp("videos")
    face = cv2.cvtColor(helpers.grace_hopper((256, 300)), cv2.COLOR_BGR2RGB)
    rects = dlib.get_frontal_face_detector()(face, 1)
    assert len(rects) == 1
    r = rects[0]
    box = (r.left(), r.top(), r.right(), r.bottom())
    height, width = 560, 720
    writer = cv2.VideoWriter(str(folder / "hopper.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10,
                             (width, height))
    offsets = []
    for f in range(8):
        canvas = np.full((height, width, 3), 90, np.uint8)
        oy, ox = 40 + 20 * f, 30 + 50 * f
        canvas[oy:oy + face.shape[0], ox:ox + face.shape[1]] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        offsets.append((ox, oy))
    writer.release()
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    return folder, box, offsets


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
