"""faces/rules.py: the named crop rules against their references' own numbers
(fixtures/crop_rules: computed once by DeepfakeBench's preprocess.py and FaceForensics++'s
detect_from_video.py on the inputs of crop_cases.py), the detector each rule takes, and a missing
landmark predictor."""
import json

import numpy as np
import pytest

from crop_cases import FFPP_BOXES, FIVE_POINT_CASES, astronaut_frames, synthetic
from helpers import FIXTURES

dlib = pytest.importorskip("dlib")

from errors import UserError
from faces.rules import build_rule, detector_of, dfb_align, dfb_frame_indices, ffpp_box

HERE = FIXTURES / "crop_rules"
landmarks = pytest.importorskip("faces.landmarks")
needs_predictor = pytest.mark.skipif(landmarks.stand_in_path() is None,
                                     reason="pip install face-recognition-models")


def _reference():
    with open(HERE / "rules.json", encoding="utf-8") as fh:
        return json.load(fh)


@pytest.mark.parametrize("case", range(len(FIVE_POINT_CASES)))
def test_deepfakebench_alignment_equals_its_img_align_crop(case):
    """Fixed five points on a synthetic image: upright, rotated, at the frame's edge (black
    padding), a corner, a small face at 224 px: the same bytes as the reference's crop."""
    points, side = FIVE_POINT_CASES[case]
    crop, m = dfb_align(synthetic(), np.array(points, np.float32), side)
    expected = np.load(HERE / "deepfakebench_align.npz")[f"crop{case}"]
    assert crop.shape == (side, side, 3)
    assert np.array_equal(crop, expected)
    if case == 2:  # the face at the left edge: the warp reaches past the frame, black there
        assert (crop[:, :8] == 0).all(axis=-1).any()


def test_deepfakebench_frame_indices_round_down():
    expected = _reference()["deepfakebench_frames"]
    assert sorted(expected, key=int) == ["1", "20", "31", "32", "33", "300"]
    for total, indices in expected.items():
        assert dfb_frame_indices(int(total)) == indices
    # rounding to the nearest (this project's own frames) differs from rounding down
    from faces.video import frame_indices
    assert frame_indices(300, 32) != expected["300"]


def test_ffpp_boxes_at_every_edge():
    expected = _reference()["ffpp_boxes"]
    assert len(expected) == len(FFPP_BOXES)
    for (left, t, r, b, w, h), want in zip(FFPP_BOXES, expected):
        x, y, side = ffpp_box((left, t, r, b), w, h)
        assert [x, y, side] == want
        assert x >= 0 and y >= 0 and x + side <= w and y + side <= h  # square, inside the frame


@needs_predictor
@pytest.mark.slow
def test_astronaut_frames_through_dlib_equal_the_reference_pipeline():
    """Frames built from scikit-image's astronaut (shifted, rotated, scaled, at the edge, a second
    smaller face) through dlib and the 68-point predictor: the largest face's five key points,
    the aligned crop and the aligned crop's landmarks are the reference's; FF++'s box of the
    first face dlib returns on the grayscale frame is the reference's. Byte for byte where dlib,
    OpenCV and scikit-image are the versions that computed the fixture; otherwise within 2 grey
    levels on 99 % of the pixels (bilinear warps of a slightly different frame)."""
    from faces.finders.dlib_hog import DlibFinder
    expected = np.load(HERE / "deepfakebench_astronaut.npz")
    dfb, ffpp = build_rule("deepfakebench"), build_rule("ffpp")
    detector = DlibFinder()
    frames = astronaut_frames()
    assert len(frames) == 6
    for i, rgb in enumerate(frames):
        faces = dfb.faces(dfb.detect(detector, rgb))
        piece = dfb.cut(rgb, faces[0])
        assert piece is not None and piece.crop.shape == (256, 256, 3)
        assert np.array_equal(np.array(piece.keypoints), expected[f"keypts{i}"])
        diff = np.abs(piece.crop.astype(int) - expected[f"crop{i}"].astype(int))
        assert diff.max() == 0 or np.mean(diff <= 2) >= 0.99
        assert np.abs(piece.landmarks - expected[f"marks{i}"]).max() <= 1
        first = ffpp.faces(ffpp.detect(detector, rgb))[0]
        x1, y1, x2, _ = ffpp.cut(rgb, first).rect
        assert [x1, y1, x2 - x1] == expected[f"ffpp{i}"].tolist()
    # the frame with a second, smaller face: the largest is taken
    dets = dfb.detect(detector, frames[5])
    big = dfb.faces(dets)[0]
    assert len(dets) >= 2 and big.box[0] < 320  # the left, larger astronaut
    assert all(big.area >= d.area for d in dets)


def test_rule_detectors_and_bad_names():
    assert detector_of("deepfakebench") == "dlib" and detector_of("ffpp") == "dlib"
    assert detector_of("recce") == "retinaface"
    assert detector_of("box") == "dlib" and detector_of("box", "retinaface") == "retinaface"
    with pytest.raises(UserError, match="face_detector retinaface: the deepfakebench crop rule "
                                        "detects faces with dlib"):
        detector_of("deepfakebench", "retinaface")
    with pytest.raises(UserError, match="crop 'dfb': expected one of deepfakebench, ffpp, recce, "
                                        "box"):
        build_rule("dfb")


def test_missing_predictor_is_one_line(monkeypatch):
    monkeypatch.setattr(landmarks, "stand_in_path", lambda: None)
    with pytest.raises(UserError) as exc:
        build_rule("deepfakebench")
    assert "pip install face-recognition-models" in str(exc.value)
    assert "shape_predictor_81_face_landmarks.dat" in str(exc.value)
    with pytest.raises(UserError, match="landmarks /nowhere.dat: no such file"):
        build_rule("deepfakebench", landmarks="/nowhere.dat")
