"""The Python API (``from faces import Predictor``): the same numbers and records as the
command line, and the example of docs/inference.md run as written."""
import csv
import os
import re

import cv2
import numpy as np
import pytest
import torch

from errors import UserError
from helpers import ROOT, hopper_video


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint):
    """A Recce checkpoint trained (as far as the API cares) at 48 px."""
    return make_checkpoint(tmp_path_factory.mktemp("api") / "best_model_1.bin",
                           config={"model": {"name": "Recce"}}, spec=48)


@pytest.fixture()
def folder(tmp_path, make_faces):
    return make_faces(tmp_path / "faces", ("b.png", "a.png", "c.jpg"), shape=(45, 36), seed=1)


def test_predict_folder_paths_and_arrays_agree_with_the_command_line(ckpt, folder, tmp_path):
    import inference
    from faces import Predictor
    det = Predictor.from_checkpoint(ckpt, device="cpu")
    assert det.spec.size == (48, 48)
    by_folder = det.predict(str(folder))
    paths = sorted(str(p) for p in folder.iterdir())
    assert by_folder == det.predict(paths)
    arrays = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in reversed(paths)]
    assert det.predict(arrays) == pytest.approx(list(reversed(by_folder)), abs=1e-6)
    assert det.predict(paths[1]) == [by_folder[1]]
    assert len(set(by_folder)) == 3
    out = tmp_path / "cli.csv"
    assert inference.main(["-b", ckpt, "-f", str(folder), "-d", "cpu", "--output", str(out)]) == 0
    with open(out) as fh:
        cli = [float(r["fake_probability"]) for r in csv.DictReader(fh)]
    assert cli == pytest.approx(by_folder, abs=1e-6)


def test_predict_errors_name_the_input(ckpt, folder):
    from faces import Predictor
    det = Predictor.from_checkpoint(ckpt, device="cpu")
    (folder / "z.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="z.png"):
        det.predict(str(folder))
    with pytest.raises(UserError, match="image 0: expected an H x W x 3 RGB uint8 array"):
        det.predict([np.zeros((8, 8), np.float32)])
    with pytest.raises(UserError, match="checkpoint not found"):
        Predictor.from_checkpoint(str(folder / "none.bin"))


def test_video_and_photo_records_are_the_command_line_s(ckpt, tmp_path):
    pytest.importorskip("dlib")
    import inference
    from faces import Predictor
    video = hopper_video(tmp_path / "clip.avi")
    det = Predictor.from_checkpoint(ckpt, device="cpu")
    rec = det.predict_video(video, frames=3)
    assert inference.main(["-b", ckpt, "--video", video, "-d", "cpu", "--frames", "3",
                           "--output", str(tmp_path / "v.csv"), "--frames_output",
                           str(tmp_path / "f.csv")]) == 0
    with open(tmp_path / "v.csv") as fh:
        row = next(csv.DictReader(fh))
    assert set(row) == set(rec) - {"faces"}
    assert float(row["fake_probability"]) == pytest.approx(rec["fake_probability"], abs=1e-6)
    assert row["prediction"] == rec["prediction"] and int(row["frames_or_faces"]) == 3
    with open(tmp_path / "f.csv") as fh:
        faces = list(csv.DictReader(fh))
    assert len(faces) == len(rec["faces"]) == 3
    assert [float(f["fake_probability"]) for f in faces] == \
        pytest.approx([f["fake_probability"] for f in rec["faces"]], abs=1e-6)
    from faces.video import iter_frames
    frame = next(iter_frames(video, indices=[0]))
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(frame[2], cv2.COLOR_RGB2BGR))
    photo = det.predict_photo(str(tmp_path / "photo.png"))
    assert photo["kind"] == "photo" and photo["frames_or_faces"] == len(photo["faces"]) >= 1


def test_the_docs_api_example_runs_as_written(ckpt, folder, tmp_path, monkeypatch):
    pytest.importorskip("dlib")
    text = open(os.path.join(ROOT, "docs", "inference.md"), encoding="utf-8").read()
    block = re.search(r"<!-- api-example -->\n```python\n(.*?)```", text, re.S).group(1)
    video = hopper_video(tmp_path / "clip.avi")
    run_dir = tmp_path / "runs" / "Recce" / "demo"
    run_dir.mkdir(parents=True)
    os.link(ckpt, run_dir / "best_model_150.bin")
    demo = tmp_path / "data" / "demo" / "celeb_df" / "Celeb-synthesis" / "images"
    demo.mkdir(parents=True)
    os.symlink(folder, demo / "id02_0002")
    assert video == str(tmp_path / "clip.avi")  # where the example looks for it
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(block, "docs/inference.md", "exec"), namespace)  # noqa: S102 - the project's own docs
    assert len(namespace["probs"]) == 3 and namespace["record"]["kind"] == "video"


def test_cuda_graphs_are_chosen_only_where_they_can_run(ckpt):
    """The code path: on the CPU the graphed scorer is the eager forward, with the same numbers;
    a capture that fails falls back to the eager forward, said once."""
    from faces import Predictor
    from model.graphs import GraphedScorer
    det = Predictor.from_checkpoint(ckpt, device="cpu")
    assert isinstance(det.forward.eager, GraphedScorer) and det.forward.eager.enabled is False
    x = torch.rand(2, 3, 48, 48) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(det.forward(x)["prob"], det.model.score(x)["prob"])
    forced = GraphedScorer(det.model)
    forced.enabled = True  # as on a GPU; capturing on the CPU fails: the eager forward, said
    out = forced(x)
    assert forced.failed and torch.allclose(out["prob"], det.model.predict(x))


def test_the_api_is_a_library_class_and_inference_keeps_its_old_name():
    """``faces.Predictor`` is the scoring wrapper (not the nn.Module contract ``model.Detector``);
    ``from inference import Detector``, written by earlier users, is the same class, with a
    deprecation warning naming the new one."""
    import faces
    import inference
    from faces.api import Predictor
    from model import Detector as Contract
    with pytest.warns(DeprecationWarning, match=r"inference\.Detector is renamed faces\.Predictor"):
        old = inference.Detector
    assert faces.Predictor is Predictor is old
    assert not issubclass(Predictor, Contract)


def test_the_face_finders_keep_their_old_import_paths_one_release():
    """``faces.detectors`` became ``faces.finders``: the old module and names still work, warning."""
    import importlib
    import sys

    from faces import finders
    from faces.finders.dlib_hog import DlibFinder
    from faces.finders.retinaface import RetinaFaceFinder
    for name in [m for m in sys.modules if m.startswith("faces.detectors")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning, match=r"faces\.detectors is renamed faces\.finders"):
        old = importlib.import_module("faces.detectors")
    assert old.FACE_DETECTORS is finders.FACE_FINDERS
    assert old.build_face_detector is finders.build_face_finder
    assert old.register_face_detector is finders.register_face_finder
    assert importlib.import_module("faces.detectors.dlib_hog").DlibDetector is DlibFinder
    assert importlib.import_module("faces.detectors.retinaface").RetinaFaceDetector \
        is RetinaFaceFinder
    assert importlib.import_module("faces.detectors.base").Detection is finders.Detection


def test_errors_about_arguments_name_the_flag_on_the_command_line(ckpt, tmp_path, capsys):
    """The API speaks of its arguments (image_size, device, model); inference.py of its flags."""
    from faces import Predictor
    with pytest.raises(UserError, match=r"^image_size 3: the model needs at least 7$"):
        Predictor.from_checkpoint(ckpt, device="cpu", image_size=3)
    with pytest.raises(UserError, match=r"^device 'gpu0': not a device"):
        Predictor.from_checkpoint(ckpt, device="gpu0")
    with pytest.raises(UserError, match=r"^model Xception: the checkpoint holds a Recce model$"):
        Predictor.from_checkpoint(ckpt, device="cpu", model="Xception")
    import inference
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    for args, line in [(["-s", "3", "-d", "cpu"], "--image_size 3: the model needs at least 7"),
                       (["-d", "gpu0"], "--device 'gpu0': not a device (cpu, cuda, cuda:0, ...)"),
                       (["-d", "cpu", "--model", "Xception"],
                        "--model Xception: the checkpoint holds a Recce model")]:
        assert inference.main(["-b", ckpt, "-i", str(image)] + args) == 2
        assert capsys.readouterr().err == f"error: {line}\n"
    assert inference.main(["-b", ckpt, "--video", str(tmp_path / "none"), "-d", "cpu"]) == 2
    none = tmp_path / "none"
    assert capsys.readouterr().err == f"error: --video {none}: no such file or folder\n"
