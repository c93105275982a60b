"""Every value through every door: a table of bad values (0, -1, NaN, inf, huge, a wrong type,
empty) for each keyword of the Python API (``Predictor.from_checkpoint``, ``Predictor``,
``predict``, ``predict_video``, ``predict_photo``) and each flag of inference.py. Each is one
UserError naming the keyword, the value and what is accepted (the command line: one ``error:``
line naming the flag, exit 2, no traceback), and nothing is written. A probability that is not a
finite number is never a verdict."""
import importlib.util
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from checks import (MAX_BATCH_SIZE, MAX_FRAMES, MAX_INPUT_SIZE, MAX_MARGIN, MAX_PIXELS, MAX_SIDE,
                    MAX_WORKERS)
from conftest import ROOT
from errors import UserError
from helpers import hopper_video
from model import Detector, InputSpec, Recce

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


def _cases(keywords):
    return [pytest.param(k, v, id=f"{k}={v!r}") for k in keywords for v in BAD[k]]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("values") / "best_model_1.bin"
    torch.save({"model": Recce().state_dict(), "config": {"model": {"name": "Recce"}},
                "input_spec": InputSpec((48, 48), (0.5,) * 3, (0.5,) * 3).to_dict()}, path)
    return str(path)


@pytest.fixture(scope="module")
def det(ckpt):
    from faces import Predictor
    return Predictor.from_checkpoint(ckpt, device="cpu")


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A short video of a real face and a photo of one frame."""
    d = tmp_path_factory.mktemp("values_media")
    video = hopper_video(d / "clip.avi")
    cap = cv2.VideoCapture(video)
    ok, frame = cap.read()
    cap.release()
    assert ok
    cv2.imwrite(str(d / "photo.png"), frame)
    return video, str(d / "photo.png")


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


# ---------------------------------------------------------------- the Python API, every value
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
def test_predict_video_refuses_each_bad_value_and_writes_nothing(det, media, keyword, value,
                                                                 tmp_path):
    vis = tmp_path / "vis"
    _refused(lambda: det.predict_video(media[0], vis_dir=str(vis), **{keyword: value}),
             keyword, value, tmp_path)
    assert not vis.exists()


@pytest.mark.parametrize("keyword,value", _cases(PHOTO_KEYWORDS))
def test_predict_photo_refuses_each_bad_value_and_writes_nothing(det, media, keyword, value,
                                                                 tmp_path):
    vis = tmp_path / "vis"
    _refused(lambda: det.predict_photo(media[1], vis_dir=str(vis), **{keyword: value}),
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


def test_vis_dir_naming_a_file_or_nothing(det, media, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("the user's")
    for call, item in ((det.predict_video, media[0]), (det.predict_photo, media[1])):
        with pytest.raises(UserError, match=r"^vis_dir .*afile: is a file, expected a folder$"):
            call(item, vis_dir=str(afile))
        with pytest.raises(UserError, match=r"^vis_dir '': expected a path"):
            call(item, vis_dir="")
    with pytest.raises(UserError, match=r"^vis_dir .*afile: is a file"):
        list(det.score_items([media[1]], ["photo.png"], vis_dir=str(afile)))
    assert afile.read_text() == "the user's" and sorted(os.listdir(tmp_path)) == ["afile"]


def test_frames_every_and_all_frames_choose_one_way(det, media):
    with pytest.raises(UserError, match=r"^frames and every both choose the frames of a video"):
        det.predict_video(media[0], frames=3, every=2)
    with pytest.raises(UserError, match=r"^every and all_frames both choose"):
        det.predict_video(media[0], every=2, all_frames=True)


def test_an_unknown_keyword_is_refused_before_the_checkpoint_is_read(ckpt, monkeypatch):
    from faces import Predictor
    from model import checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint", lambda *a, **k: pytest.fail("read"))
    with pytest.raises(TypeError, match="batchsize"):
        Predictor.from_checkpoint(ckpt, device="cpu", batchsize=4)


def test_the_bounds_and_numpy_numbers_are_accepted(ckpt, media):
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
    video = det.predict_video(media[0], frames=np.int64(2), margin=np.float32(MAX_MARGIN),
                              min_face_size=1, min_face_score=-1)
    assert video["error"] is None and video["frames_or_faces"] == 2
    every = det.predict_video(media[0], every=MAX_FRAMES)  # the first frame only
    assert every["error"] is None and {f["frame"] for f in every["faces"]} == {0}
    photo = det.predict_photo(media[1], min_face_size=MAX_SIDE)  # no box is that large
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


# ---------------------------------------------------------------- inference.py, every flag
# flag -> values argparse lets through (its own type check answers the rest)
FLAG_BAD = {
    "--batch_size": ["0", "-1", str(MAX_BATCH_SIZE + 1)],
    "--num_workers": ["-1", str(MAX_WORKERS + 1)],
    "--max_pixels": ["0", "-1", str(MAX_PIXELS + 1)],
    "--image_size": ["0", "-1", str(MAX_INPUT_SIZE + 1)],
    "--frames": ["0", "-1", str(MAX_FRAMES + 1)],
    "--every": ["0", "-5", str(MAX_FRAMES + 1)],
    "--margin": ["0", "-1", "nan", "inf", "-inf", "1e300", "10.5"],
    "--min_face_size": ["0", "-1", str(MAX_SIDE + 1)],
    "--min_face_score": ["nan", "inf", "-inf"],
}
FLAG_CASES = [pytest.param(f, v, id=f"{f}={v}") for f, vs in FLAG_BAD.items() for v in vs]


@pytest.mark.parametrize("flag,value", FLAG_CASES)
@pytest.mark.parametrize("mode", ["crops", "video"])
def test_every_flag_gets_the_api_s_rule_in_one_line(ckpt, media, tmp_path, capsys, flag, value,
                                                    mode):
    import inference
    out, vis = tmp_path / "r.csv", tmp_path / "vis"
    source = ["-i", media[1]] if mode == "crops" else ["--video", media[0]]
    assert inference.main(["-b", ckpt, "-d", "cpu", *source, f"{flag}={value}", "--output",
                           str(out), "-v", "--vis_dir", str(vis)]) == 2
    stdout, err = capsys.readouterr()
    assert stdout == "" and err.count("\n") == 1, err
    assert err.startswith(f"error: {flag}: expected ")
    shown = float(err.rstrip("\n").rsplit(", got ", 1)[1])
    assert shown == float(value) or (math.isnan(shown) and value == "nan")
    assert not out.exists() and not vis.exists()


def _cli(args):
    return subprocess.run([sys.executable, "inference.py"] + args, cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_the_command_line_in_a_fresh_process(ckpt, media, tmp_path):
    """A handful of the table as a user runs it: one line, exit 2, no traceback, nothing written;
    a value of the wrong type is argparse's own usage error, naming the flag."""
    out, frames_out, vis = tmp_path / "r.csv", tmp_path / "f.csv", tmp_path / "vis"
    written = ["--output", str(out), "-v", "--vis_dir", str(vis)]
    cases = [
        (["--video", media[0], "--frames", "0", "--frames_output", str(frames_out)],
         "--frames: expected a number of frames from 1 to 10000000, got 0"),
        (["--video", media[0], "--every", "0"],
         "--every: expected a number of frames from 1 to 10000000, got 0"),
        (["-i", media[1], "--detect", "--margin", "nan"],
         "--margin: expected a number above 0 and at most 10 (1.3 is usual), got nan"),
        (["-i", media[1], "--batch_size", "0"],
         "--batch_size: expected a batch size from 1 to 65536, got 0"),
        (["-i", media[1], "-s", "0"], "--image_size: expected a size in pixels from 1 to 2048, "
                                      "got 0"),
    ]
    for args, line in cases:
        proc = _cli(["-b", ckpt, "-d", "cpu"] + args + written)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == f"error: {line}\n"
    proc = _cli(["-b", ckpt, "-d", "cpu", "--video", media[0], "--frames", "many"] + written)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].endswith("error: argument --frames: invalid int value: "
                                                 "'many'")
    assert sorted(os.listdir(tmp_path)) == []


# ---------------------------------------------------------------- no verdict of a NaN
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


def test_a_non_finite_probability_is_an_error_never_a_verdict(tmp_path, media):
    from faces import Predictor
    from faces.scoring import crop_record, prediction
    det = Predictor(NanDetector().eval(), torch.device("cpu"))
    black, white = np.zeros((20, 20, 3), np.uint8), np.full((20, 20, 3), 255, np.uint8)
    assert 0 < det.predict([black])[0] < 1
    with pytest.raises(UserError, match=r"^the detector gave a non-finite probability \(nan\) "
                                        r"for image 1$"):
        det.predict([black, white])
    with pytest.raises(UserError, match=r"non-finite probability \(nan\) for .*photo.png$"):
        det.predict(media[1])
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
        det.predict_video(media[0], frames=2, vis_dir=str(vis))
    assert not vis.exists() or os.listdir(vis) == []  # the temporary frames are gone


def test_the_command_line_prints_no_verdict_of_a_nan(tmp_path, media):
    """A user's detector (imported with --import) that gives NaN: one line naming the input and
    the detector, exit 2, no "prediction: real", no output file."""
    plugin = tmp_path / "nan_detector.py"
    plugin.write_text(
        "import torch.nn as nn\n"
        "from model import Detector, InputSpec, register_detector\n\n\n"
        "@register_detector\n"
        "class NanValuesDetector(Detector):\n"
        "    default_spec = InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3)\n\n"
        "    def __init__(self, num_classes=1, drop_rate=0.0, pretrained=False):\n"
        "        super().__init__()\n"
        "        self.num_classes = num_classes\n"
        "        self.fc = nn.Linear(3, num_classes)\n\n"
        "    def forward(self, x, return_aux=False):\n"
        "        logits = self.fc(x.mean(dim=(2, 3))) * float('nan')\n"
        "        return {'logits': logits} if return_aux else logits\n")
    ckpt = tmp_path / "nan_model.bin"
    torch.save({"model": {"fc.weight": torch.zeros(1, 3), "fc.bias": torch.zeros(1)},
                "config": {"model": {"name": "NanValuesDetector", "num_classes": 1}},
                "input_spec": InputSpec((16, 16), (0.5,) * 3, (0.5,) * 3).to_dict()}, ckpt)
    out = tmp_path / "r.csv"
    proc = _cli(["-b", str(ckpt), "-i", media[1], "-d", "cpu", "--import", str(plugin),
                 "--output", str(out)])
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines()[1:] == [  # after the threshold's line, one error line
        f"error: the detector gave a non-finite probability (nan) for {media[1]}"]
    assert "prediction" not in proc.stdout and not out.exists()
