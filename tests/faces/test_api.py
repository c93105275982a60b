"""The Python API (``from faces import Predictor``): the same numbers and records as the
command line, and the example of docs/inference.md run as written."""
import csv
import importlib.util
import os
import re

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from checks import (
    MAX_BATCH_SIZE,
    MAX_FRAMES,
    MAX_INPUT_SIZE,
    MAX_MARGIN,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_WORKERS,
)
from crop_cases import astronaut_frames, astronaut_video
from errors import UserError
from faces.landmarks import stand_in_path
from helpers import ROOT, deepfakebench_file, hopper_video
from model import Detector, InputSpec


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, make_checkpoint):
    """A Recce checkpoint trained (as far as the API cares) at 48 px."""
    return make_checkpoint(tmp_path_factory.mktemp("api") / "best_model_1.bin",
                           config={"model": {"name": "Recce"}}, spec=48)


@pytest.fixture()
def folder(tmp_path, make_faces):
    return make_faces(tmp_path / "faces", ("b.png", "a.png", "c.jpg"), shape=(45, 36), seed=1)


@pytest.mark.slow
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


@pytest.mark.slow
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
    exec(compile(block, "docs/inference.md", "exec"), namespace)
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
    """``faces.detectors`` became ``faces.finders``: the old module and names still work, warning.
    """
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


# ---------------------------------------------------------------- every value through every keyword
NAN, INF = float("nan"), float("inf")
# what every numeric keyword refuses: zero and negatives where they mean nothing, NaN, infinities,
# text and lists (a wrong type), empty text and an empty list
COMMON = [-1, NAN, INF, -INF, "8", [8], "", []]
# keyword -> its bad values: COMMON, plus zero where zero means nothing, plus a huge value (just
# above the shared bound and far above it)
BAD = {
    "batch_size": COMMON + [0, 2.5, MAX_BATCH_SIZE + 1, 10 ** 12],
    "num_workers": COMMON + [MAX_WORKERS + 1, 10 ** 9],  # 0: decode in the calling process
    "max_pixels": COMMON + [0, MAX_PIXELS + 1, 10 ** 30],
    "image_size": COMMON + [0, 64.5, MAX_INPUT_SIZE + 1, 10 ** 6],
    "num_classes": COMMON + [0, 3, 1.5, 10 ** 6],
    "frames": COMMON + [0, 3.5, MAX_FRAMES + 1, 10 ** 12],
    "every": COMMON + [0, MAX_FRAMES + 1, 10 ** 12],
    "margin": COMMON + [0, 0.0, -1e-9, MAX_MARGIN + 0.5, 1e300, None],
    "min_face_size": COMMON + [0, 12.5, MAX_SIDE + 1, 10 ** 12, None],
    # a detector's own scale: 0, negatives and large thresholds are its user's choice
    "min_face_score": [NAN, INF, -INF, "0.5", [0.5], "", []],
    "trust": [0, 1, "yes", "", None, NAN],
    "graphs": [0, 1, "no", "", None],
    "all_frames": [1, "yes", "", NAN],
    # a probability in [0, 1] (text that reads as one too, as the command line gives it) or an
    # operating point's name
    "threshold": [7, -0.5, 1.0000001, -1e-9, 10 ** 12, NAN, INF, -INF, "8", "-0.5", "nan",
                  "fpr@1", "", [0.5], [], True, {"eer": 0.5}],
    "backend": ["", "tensorrt", "TORCH", 1, NAN, None, ["torch"]],
    "precision": ["", "fp16", "int8", 32, NAN, None, ["fp32"]],
    "threads": COMMON + [0, 2.5, MAX_WORKERS + 1, 10 ** 9],
    "device": ["gpu0", "", "meta", -1, NAN, 3.5, [0], True],
    "model": ["", "NoSuchDetector", 3, NAN, [], ["Recce"]],
    "imports": [3, NAN, {}, ""],
}
# every keyword from_checkpoint takes (its own and Predictor's), the path aside (tested below)
CHECKPOINT_KEYWORDS = ("threshold", "batch_size", "num_workers", "max_pixels", "image_size",
                       "num_classes", "trust", "graphs", "backend", "precision", "threads",
                       "device", "model", "imports")
PREDICTOR_KEYWORDS = ("threshold", "batch_size", "num_workers", "max_pixels", "graphs",
                      "backend", "precision", "threads", "device")
PHOTO_KEYWORDS = ("margin", "min_face_size", "min_face_score")
VIDEO_KEYWORDS = PHOTO_KEYWORDS + ("frames", "every", "all_frames")


def test_the_keywords_are_declared_once_and_the_methods_say_the_same_defaults():
    """``faces.arguments.KEYWORDS`` holds each keyword's default and kind; every one is a keyword
    of the API's methods, with the default the table gives, and its kind checks it."""
    import inspect

    from faces.api import Predictor
    from faces.arguments import KEYWORDS, check_keywords
    seen = set()
    for method in (Predictor.__init__, Predictor.from_checkpoint, Predictor.score_video,
                   Predictor.score_photo):
        for name, param in inspect.signature(method).parameters.items():
            if name in KEYWORDS:
                seen.add(name)
                assert param.default == KEYWORDS[name].default, (method.__name__, name)
    assert seen == set(KEYWORDS)
    assert check_keywords(**{n: k.default for n, k in KEYWORDS.items()}) == \
        {n: k.default for n, k in KEYWORDS.items()}
    with pytest.raises(UserError, match=r"^margin: expected a number above 0 and at most 10"):
        check_keywords(margin=0)



def _cases(keywords):
    return [pytest.param(k, v, id=f"{k}={v!r}") for k in keywords for v in BAD[k]]


@pytest.fixture(scope="module")
def det(ckpt):
    from faces import Predictor
    return Predictor.from_checkpoint(ckpt, device="cpu")


def _refused(call, keyword, value, out_dir):
    """``call()`` is one UserError about ``keyword`` naming ``value``; ``out_dir`` stays empty."""
    before = sorted(os.listdir(out_dir))
    with pytest.raises(UserError) as info:
        call()
    text = str(info.value)
    assert info.value.arg == keyword, text
    assert text.startswith(keyword) and text[len(keyword)] in ": ", text
    assert repr(value) in text and "\n" not in text
    assert sorted(os.listdir(out_dir)) == before


@pytest.mark.parametrize("keyword,value", _cases(CHECKPOINT_KEYWORDS))
def test_from_checkpoint_refuses_each_bad_value_before_reading_the_file(ckpt, keyword, value,
                                                                        tmp_path, monkeypatch):
    from faces import Predictor
    from model import checkpoint
    read = []
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: read.append(a))
    _refused(lambda: Predictor.from_checkpoint(ckpt, **{"device": "cpu", keyword: value}),
             keyword, value, tmp_path)
    assert read == []  # refused before the checkpoint was read


@pytest.mark.parametrize("keyword,value", _cases(PREDICTOR_KEYWORDS))
def test_the_predictor_refuses_each_bad_value(det, keyword, value, tmp_path):
    from faces import Predictor
    given = {"model": det.model, "device": det.device, keyword: value}
    _refused(lambda: Predictor(**given), keyword, value, tmp_path)


@pytest.mark.slow
def test_the_threshold_is_checked_first_and_by_the_command_line_s_rule(ckpt, det, capsys,
                                                                      monkeypatch):
    """A bad threshold beside other bad values is the error said, at every door; a good one
    (a bound, a NumPy number, text) is taken, and the point's name needs a calibration."""
    import inference
    from faces import Predictor
    from model import checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("read"))
    for call in (lambda **kw: Predictor.from_checkpoint(ckpt, device="gpu0", **kw),
                 lambda **kw: Predictor(det.model, "gpu0", **kw)):
        with pytest.raises(UserError, match=r"^threshold 7: expected a probability in \[0, 1\]$"):
            call(threshold=7, batch_size=0, backend="nope", num_workers=-1)
    assert inference.main(["-b", ckpt, "-i", ckpt, "--threshold", "7", "--batch_size",
                           "0"]) == 2
    assert capsys.readouterr().err == "error: --threshold 7: expected a probability in [0, 1]\n"
    monkeypatch.undo()
    for value, taken in ((0, 0.0), (1, 1.0), (np.float32(0.25), 0.25), ("0.75", 0.75)):
        assert Predictor(det.model, det.device, threshold=value).threshold == taken
        assert Predictor.from_checkpoint(ckpt, "cpu", threshold=value).threshold == taken
    with pytest.raises(UserError, match=r"^threshold eer: the checkpoint has no calibration"):
        Predictor.from_checkpoint(ckpt, "cpu", threshold="eer")
    with pytest.raises(UserError, match=r"^model 'Recce': expected a detector \(a model.Detector"):
        Predictor("Recce", "cpu")


@pytest.mark.parametrize("keyword,value", _cases(VIDEO_KEYWORDS))
def test_predict_video_refuses_each_bad_value_and_writes_nothing(det, hopper_media, keyword, value,
                                                                 tmp_path):
    vis = tmp_path / "vis"
    _refused(lambda: det.predict_video(hopper_media[0], vis_dir=str(vis), **{keyword: value}),
             keyword, value, tmp_path)
    assert not vis.exists()


@pytest.mark.parametrize("keyword,value", _cases(PHOTO_KEYWORDS))
def test_predict_photo_refuses_each_bad_value_and_writes_nothing(det, hopper_media, keyword, value,
                                                                 tmp_path):
    vis = tmp_path / "vis"
    _refused(lambda: det.predict_photo(hopper_media[1], vis_dir=str(vis), **{keyword: value}),
             keyword, value, tmp_path)
    assert not vis.exists()


@pytest.mark.parametrize("images,text", [
    ("", r"^images '': an empty path"),
    ([], r"^images \[\]: an empty list"),
    (5, r"^images: expected a folder, an image path, .* got int$"),
    (None, r"^images: expected .* got NoneType$"),
    (NAN, r"^images: expected .* got float$"),
    ([np.zeros((0, 16, 3), np.uint8)], r"^image 0: an array of 0 x 16 pixels \(no pixel"),
    ([np.zeros((16, 0, 3), np.uint8)], r"^image 0: an array of 16 x 0 pixels"),
    ([np.zeros((8, 8), np.uint8)], r"^image 0: expected an H x W x 3 RGB uint8 array"),
    ([np.full((8, 8, 3), NAN, np.float32)], r"^image 0: expected an H x W x 3 RGB uint8 array"),
    ([""], r"^image 0: an empty path$"),
    ([3], r"^image 0: expected a path or an RGB array, got int$"),
])
def test_predict_refuses_what_is_not_an_image(det, images, text):
    """An empty path, an empty list, an array without pixels (which OpenCV would meet) or a
    value that is no image: one UserError naming it, before any scoring."""
    with pytest.raises(UserError, match=text):
        det.predict(images)


@pytest.mark.parametrize("path", [None, "", 3, NAN, [b"clip.avi"]])
def test_video_and_photo_paths_that_are_not_paths(det, path, tmp_path):
    for call in (det.predict_video, det.predict_photo):
        _refused(lambda: call(path), "path", path, tmp_path)
    from faces import Predictor
    with pytest.raises(UserError, match=r"^path .*: expected a path") as info:
        Predictor.from_checkpoint(path, device="cpu")
    assert info.value.arg == "path"


def test_vis_dir_naming_a_file_or_nothing(det, hopper_media, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("the user's")
    for call, item in ((det.predict_video, hopper_media[0]), (det.predict_photo, hopper_media[1])):
        with pytest.raises(UserError, match=r"^vis_dir .*afile: is a file, expected a folder$"):
            call(item, vis_dir=str(afile))
        with pytest.raises(UserError, match=r"^vis_dir '': expected a path"):
            call(item, vis_dir="")
    with pytest.raises(UserError, match=r"^vis_dir .*afile: is a file"):
        list(det.score_items([hopper_media[1]], ["photo.png"], vis_dir=str(afile)))
    assert afile.read_text() == "the user's" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_frames_every_and_all_frames_choose_one_way(det, hopper_media):
    with pytest.raises(UserError, match=r"^frames and every both choose the frames of a video"):
        det.predict_video(hopper_media[0], frames=3, every=2)
    with pytest.raises(UserError, match=r"^every and all_frames both choose"):
        det.predict_video(hopper_media[0], every=2, all_frames=True)


def test_an_unknown_keyword_is_refused_before_the_checkpoint_is_read(ckpt, monkeypatch):
    from faces import Predictor
    from model import checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(TypeError, match="batchsize"):
        Predictor.from_checkpoint(ckpt, device="cpu", batchsize=4)


@pytest.mark.slow
def test_the_bounds_and_numpy_numbers_are_accepted(ckpt, hopper_media):
    """The control of the tables above: each bound itself is taken, and so are NumPy numbers and
    None (the default) where a keyword has one; an image size 0 is no longer the default."""
    pytest.importorskip("dlib")
    from faces import Predictor
    det = Predictor.from_checkpoint(ckpt, device="cpu", batch_size=np.int64(MAX_BATCH_SIZE),
                                    num_workers=0, max_pixels=MAX_PIXELS, num_classes=1.0,
                                    image_size=np.int32(48), trust=False, graphs=False)
    assert (det.batch_size, det.max_pixels, det.spec.size) == (MAX_BATCH_SIZE, MAX_PIXELS, (48, 48))
    assert Predictor.from_checkpoint(ckpt, device="cpu", image_size=MAX_INPUT_SIZE,
                                     num_workers=None).spec.size == (2048, 2048)
    video = det.predict_video(hopper_media[0], frames=np.int64(2), margin=np.float32(MAX_MARGIN),
                              min_face_size=1, min_face_score=-1)
    assert video["error"] is None and video["frames_or_faces"] == 2
    every = det.predict_video(hopper_media[0], every=MAX_FRAMES)  # the first frame only
    assert every["error"] is None and {f["frame"] for f in every["faces"]} == {0}
    photo = det.predict_photo(hopper_media[1], min_face_size=MAX_SIDE)  # no box is that large
    assert photo["error"] == "no face found"


def test_imports_as_one_string_is_one_import(ckpt, tmp_path):
    """``imports="x.py"`` is the file x.py, not the letters x, ., p, y."""
    from faces import Predictor
    plugin = tmp_path / "my_plugin_of_values.py"
    plugin.write_text("LOADED = True\n")
    det = Predictor.from_checkpoint(ckpt, device="cpu", imports=str(plugin))
    assert det.spec.size == (48, 48)
    with pytest.raises(UserError, match=r"^imports: file not found: .*missing_plugin.py$"):
        Predictor.from_checkpoint(ckpt, device="cpu", imports=str(tmp_path / "missing_plugin.py"))


class NanDetector(Detector):
    """A detector whose forward gives a NaN logit for every image but a black one (its weights
    are finite, so a checkpoint of it loads): the case a checkpoint's checks cannot catch."""

    default_spec = InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3)

    def __init__(self, num_classes=1, drop_rate=0.0, pretrained=False):
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(3, num_classes)

    def forward(self, x, return_aux=False):
        black = (x == -1).flatten(1).all(dim=1, keepdim=True)
        logits = self.fc(x.mean(dim=(2, 3))) + torch.where(black, 0.0, float("nan"))
        return {"logits": logits} if return_aux else logits


def test_a_non_finite_probability_is_an_error_never_a_verdict(tmp_path, hopper_media):
    from faces import Predictor
    from faces.scoring import crop_record, prediction
    det = Predictor(NanDetector().eval(), torch.device("cpu"))
    black, white = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 255, np.uint8)
    assert 0 < det.predict([black])[0] < 1
    with pytest.raises(UserError, match=r"^the detector gave a non-finite probability \(nan\) "
                                        r"for image 1$"):
        det.predict([black, white])
    with pytest.raises(UserError, match=r"non-finite probability \(nan\) for .*photo.png$"):
        det.predict(hopper_media[1])
    for prob in (NAN, INF):
        with pytest.raises(UserError, match="non-finite probability .* for x.png"):
            prediction(prob, 0.5, "x.png")
        with pytest.raises(UserError, match="non-finite probability .* for x.png"):
            crop_record("x.png", prob, None, 0.5)
    assert prediction(None, 0.5) is None and prediction(0.5, 0.5) == "fake"
    if importlib.util.find_spec("dlib") is None:
        pytest.skip("the video path needs dlib")
    vis = tmp_path / "vis"
    with pytest.raises(UserError, match=r"non-finite probability \(nan\) for .*clip.avi$"):
        det.predict_video(hopper_media[0], frames=2, vis_dir=str(vis))
    assert not vis.exists() or os.listdir(vis) == []  # the temporary frames are gone


@pytest.mark.skipif(stand_in_path() is None, reason="pip install face-recognition-models")
@pytest.mark.slow
def test_deepfakebench_checkpoint_scores_a_video_with_its_crops(tmp_path):
    """No flag: a DeepfakeBench checkpoint cuts a raw video's faces by DeepfakeBench's rule; the
    record says so; the crops scored are the aligned crops (the same probability as scoring the
    rule's crops of the decoded frames directly)."""
    pytest.importorskip("dlib")
    from faces import Predictor
    from faces.finders.dlib_hog import DlibFinder
    from faces.rules import build_rule
    from faces.video import iter_frames
    ckpt = deepfakebench_file(tmp_path / "recce_best.pth")
    video = astronaut_video(tmp_path / "clip.avi", astronaut_frames()[:3], 6)
    pred = Predictor.from_checkpoint(ckpt, "cpu", image_size=64)
    assert pred.face_crop == "deepfakebench"
    rec = pred.predict_video(video, frames=3)
    assert rec["face_crop"] == "deepfakebench" and rec["error"] is None
    rule, detector = build_rule("deepfakebench"), DlibFinder()
    crops = []
    for _, _, rgb in iter_frames(video, choose=lambda n: rule.frame_indices(n, 3, None)):
        crops.append(rule.cut(rgb, rule.faces(rule.detect(detector, rgb))[0]).crop)
    direct = pred.predict(crops)
    main_faces = [f for f in rec["faces"] if f["track"] == rec["track"]]
    assert [round(f["fake_probability"], 5) for f in main_faces] == \
        [round(p, 5) for p in direct]
    # a given rule wins; a conflicting detector and a floor under a named rule are one line each
    assert pred.predict_video(video, frames=2, crop="box")["face_crop"] == "box"
    with pytest.raises(UserError, match="min_face_score 0.5: the deepfakebench crop rule"):
        pred.predict_video(video, min_face_score=0.5)
    with pytest.raises(UserError, match="crop: 'square' is not one of"):
        pred.predict_video(video, crop="square")
