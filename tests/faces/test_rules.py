"""The named crop rules against their references' own numbers (fixtures/crop_rules: computed once
by DeepfakeBench's preprocess.py and FaceForensics++'s detect_from_video.py on the inputs of
crop_cases.py), DeepfakeBench's tree as its tools read it, the checkpoint's rule used with no
flag, the per-label frame counts, and faces a track confirms."""
import json
import os

import cv2
import numpy as np
import pytest
import torch

from conftest import FIXTURES
from crop_cases import FFPP_BOXES, FIVE_POINT_CASES, astronaut_frames, synthetic

dlib = pytest.importorskip("dlib")

from errors import UserError  # noqa: E402
from faces.rules import (build_rule, detector_of, dfb_align, dfb_frame_indices,  # noqa: E402
                         ffpp_box)

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
    for (l, t, r, b, w, h), want in zip(FFPP_BOXES, expected):
        x, y, side = ffpp_box((l, t, r, b), w, h)
        assert [x, y, side] == want
        assert x >= 0 and y >= 0 and x + side <= w and y + side <= h  # square, inside the frame


@needs_predictor
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


# -- extraction ----------------------------------------------------------------------------------

def _write_video(path, frames, count=20):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for k in range(count):
        writer.write(cv2.cvtColor(frames[k % len(frames)], cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def dfb_tree(tmp_path_factory):
    """Two videos extracted with --crop deepfakebench into a DeepfakeBench-shaped tree."""
    if landmarks.stand_in_path() is None:
        pytest.skip("pip install face-recognition-models")
    from faces.extract import extract
    root = tmp_path_factory.mktemp("dfb")
    videos = root / "FaceForensics++" / "original_sequences" / "youtube" / "c23" / "videos"
    videos.mkdir(parents=True)
    frames = astronaut_frames()
    paths = [_write_video(videos / "000.avi", frames, 12),
             _write_video(videos / "001.avi", frames[::-1], 9)]
    out = videos.parent
    summary = extract(paths, str(out), {"name": "dlib"}, frames=8, workers=1, progress=False,
                      rule="deepfakebench")
    return root, out, paths, summary


def test_deepfakebench_tree_and_markers_outside_frame_folders(dfb_tree):
    root, out, paths, summary = dfb_tree
    assert summary["done"] == 2 and summary["failed"] == 0 and summary["frames"] > 0
    for vid, total in (("000", 12), ("001", 9)):
        names = sorted(os.listdir(out / "frames" / vid))
        wanted = [f"{i:03d}.png" for i in dfb_frame_indices(total, 8)]
        assert set(names) <= set(wanted) and names  # frames dropped only where no face is found
        marks = sorted(os.listdir(out / "landmarks" / vid))
        assert marks == [n.replace(".png", ".npy") for n in names]
        points = np.load(out / "landmarks" / vid / marks[0], allow_pickle=False)
        assert points.shape == (68, 2) and points.dtype.kind == "i"
        assert cv2.imread(str(out / "frames" / vid / names[0])).shape == (256, 256, 3)
        assert os.path.isfile(out / ".extract" / vid / ".done")
    meta = json.loads((out / "manifest_meta.json").read_text())
    assert meta["crop_rule"] == "deepfakebench" and meta["layout"] == "deepfakebench"
    assert meta["landmarks"]["file"] == "shape_predictor_68_face_landmarks.dat"
    assert len(meta["landmarks"]["sha256"]) == 64
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert all(r["file"].startswith(f"frames/{r['video']}/") and len(r["warp"]) == 2
               and r["crop"] is None for r in lines)


def test_deepfakebench_rearrange_and_loader_read_the_tree(dfb_tree, tmp_path):
    """DeepfakeBench's rearrange.py takes every file of a video's frame folder for a frame, and
    its loader orders them by int(name up to the first dot): every name parses; the project's
    DeepfakeBench reader reads the JSON so made."""
    from dataset import build_dataset
    from dataset.face_crop import face_crop_of
    root, out, _, _ = dfb_tree
    videos = {}
    for entry in os.scandir(out / "frames"):  # rearrange.py's listing
        if entry.is_dir():
            files = [os.path.join(entry.path, f.name) for f in os.scandir(entry.path)]
            assert all(int(os.path.basename(f).split(".")[0]) >= 0 for f in files)
            rel = ["./datasets/" + os.path.relpath(f, root).replace(os.sep, "/") for f in files]
            videos[entry.name] = {"label": "FF-real", "frames": rel}
    assert set(videos) == {"000", "001"}
    data = {"FaceForensics++": {"FF-real": {"train": {"c23": videos}}}}
    folder = tmp_path / "json"
    folder.mkdir()
    (folder / "FaceForensics++.json").write_text(json.dumps(data))
    ds = build_dataset("DeepfakeBench", {"dataset_json_folder": str(folder), "root": str(root),
                                         "dataset": "FaceForensics++", "split": "train",
                                         "frame_num": 32, "transforms": []})
    assert len(ds) == sum(len(v["frames"]) for v in videos.values())
    assert ds[0]["image"].shape[-2:] == (256, 256)
    assert face_crop_of(ds.items, "DeepfakeBench") == "deepfakebench"


def test_recrop_reproduces_aligned_crops(dfb_tree, tmp_path):
    from faces.extract import recrop
    root, out, paths, _ = dfb_tree
    again = tmp_path / "again"
    s = recrop(str(out / "manifest.jsonl"), os.path.dirname(paths[0]), str(again),
               progress=False)
    assert s["failed"] == 0 and s["not_reproduced"] == 0
    for vid in ("000", "001"):
        for name in os.listdir(out / "frames" / vid):
            assert (again / "frames" / vid / name).read_bytes() == \
                (out / "frames" / vid / name).read_bytes()


def test_frames_per_label_balance_the_authors_way(tmp_path):
    """12.5 frames per fake video and 50 per real one: 2,880 fakes and 720 reals give 36,000
    frames of each, as the original authors trained."""
    from faces.extract import frames_for, label_of, per_label_frames
    assert [frames_for(12.5, i) for i in range(4)] == [12, 13, 12, 13]
    ff = tmp_path / "FF"
    reals = [str(ff / "original_sequences" / "youtube" / "c23" / "videos" / f"{i:03d}.mp4")
             for i in range(720)]
    fakes = [str(ff / "manipulated_sequences" / m / "c23" / "videos" / f"{i:03d}_{i + 1:03d}.mp4")
             for m in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures") for i in range(720)]
    counts = per_label_frames(reals + fakes, 20, frames_real=50, frames_fake=12.5)
    assert sum(counts[:720]) == 36000 and sum(counts[720:]) == 36000
    assert label_of(str(tmp_path / "Celeb-DF-v2" / "Celeb-synthesis" / "id0_id1_0000.mp4")) \
        == "fake"
    assert label_of(str(tmp_path / "Celeb-DF-v2" / "YouTube-real" / "00000.mp4")) == "real"
    with pytest.raises(UserError, match="cannot tell whether .*clip.mp4 is real or fake"):
        per_label_frames([str(tmp_path / "mine" / "clip.mp4")], 20, frames_real=50)


def test_extract_faces_flags(tmp_path, capsys):
    from tools.extract_faces import main
    videos = tmp_path / "real"
    videos.mkdir()
    _write_video(videos / "a.avi", astronaut_frames()[:2], 6)
    out = tmp_path / "out"
    assert main(["--input", str(videos), "--out", str(out), "--frames_real", "3",
                 "--workers", "1"]) == 0
    assert len([n for n in os.listdir(out / "a") if n.endswith(".png")]) == 3
    meta = json.loads((out / "manifest_meta.json").read_text())
    assert meta["crop_rule"] == "box" and meta["frames"].startswith("real 3.0")
    capsys.readouterr()
    for argv, said in ((["--landmarks", "x.dat"], "--landmarks: the box crop rule does not align"),
                       (["--crop", "deepfakebench", "--detector", "retinaface"],
                        "--detector retinaface: the deepfakebench crop rule detects faces with "
                        "dlib"),
                       (["--frames_fake", "0"], "--frames_fake 0.0: expected a number of frames"),
                       (["--frames_real", "5", "--every", "2"], "--frames_real and --every")):
        code = main(["--input", str(videos), "--out", str(tmp_path / "o2")] + argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code != 0 and len(err) == 1 and said in err[0], (argv, err)


# -- scoring raw media by the checkpoint's rule ---------------------------------------------------

def _deepfakebench_file(path):
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


@needs_predictor
def test_deepfakebench_checkpoint_scores_a_video_with_its_crops(tmp_path):
    """No flag: a DeepfakeBench checkpoint cuts a raw video's faces by DeepfakeBench's rule; the
    record says so; the crops scored are the aligned crops (the same probability as scoring the
    rule's crops of the decoded frames directly)."""
    from faces import Predictor
    from faces.finders.dlib_hog import DlibFinder
    from faces.video import iter_frames
    ckpt = _deepfakebench_file(tmp_path / "recce_best.pth")
    video = _write_video(tmp_path / "clip.avi", astronaut_frames()[:3], 6)
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


def test_checkpoint_face_crop_saved_and_checked(tmp_path):
    from model import Xception
    from model.checkpoint import load_detector
    state = {"model": Xception().state_dict(), "config": {"model": {"name": "Xception"}},
             "face_crop": "ffpp"}
    torch.save(state, tmp_path / "a.bin")
    assert load_detector(str(tmp_path / "a.bin"), torch.device("cpu")).face_crop == "ffpp"
    state["face_crop"] = "../etc"
    torch.save(state, tmp_path / "b.bin")
    with pytest.raises(UserError, match=r"b.bin: face_crop '../etc': expected one of"):
        load_detector(str(tmp_path / "b.bin"), torch.device("cpu"))
    del state["face_crop"]
    torch.save(state, tmp_path / "c.bin")
    assert load_detector(str(tmp_path / "c.bin"), torch.device("cpu")).face_crop is None


def test_training_data_says_its_rule(tmp_path):
    from dataset import Item
    from dataset.face_crop import face_crop_of
    for name, rule in (("a", "ffpp"), ("b", "ffpp"), ("c", "box")):
        (tmp_path / name / "vid").mkdir(parents=True)
        (tmp_path / name / "manifest_meta.json").write_text(
            json.dumps({"project_version": "x", "crop_rule": rule}))
    items = [Item(str(tmp_path / n / "vid" / "0000.png"), 0, "vid") for n in ("a", "b")]
    assert face_crop_of(items) == "ffpp"
    assert face_crop_of(items + [Item(str(tmp_path / "c" / "vid" / "0.png"), 1, "v")]) is None
    assert face_crop_of([Item(str(tmp_path / "x" / "v" / "0.png"), 0, "v")]) is None
    (tmp_path / "d" / "vid").mkdir(parents=True)
    (tmp_path / "d" / "manifest_meta.json").write_text(json.dumps({"crop_rule": "ffpp"}))
    assert face_crop_of([Item(str(tmp_path / "d" / "vid" / "0.png"), 0, "v")]) is None  # not ours


# -- a face found when it is there ----------------------------------------------------------------

def _two_small_hoppers(path, frames=6):
    """Grace Hopper's photograph twice in a 560 x 300 video, 70 px wide (dlib's boxes 37 px): dlib
    scores the faces under its 0.5 floor."""
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (70, 82), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (560, 300))
    for f in range(frames):
        canvas = np.full((300, 560, 3), 90, np.uint8)
        for x in (60, 360):  # still: every frame scores alike (0.27 and 0.34 here)
            canvas[90:172, x:x + 70] = face
        writer.write(canvas)
    writer.release()
    return str(path)


def test_small_clear_faces_confirmed_by_their_tracks(tmp_path):
    from faces import Predictor
    from faces.finders.dlib_hog import DlibFinder
    from faces.video import iter_frames
    from model import Xception
    video = _two_small_hoppers(tmp_path / "hopper.avi")
    scores = [d.score for _, _, rgb in iter_frames(video, 6) for d in DlibFinder()(rgb)]
    assert len(scores) >= 6 and max(scores) < 0.5  # under the floor: once "no face found"
    torch.save({"model": Xception().state_dict(), "config": {"model": {"name": "Xception"}}},
               tmp_path / "x.bin")
    rec = Predictor.from_checkpoint(str(tmp_path / "x.bin"), "cpu", image_size=64) \
        .predict_video(video, frames=6)
    assert rec["error"] is None and rec["fake_probability"] is not None
    assert rec["persons"] >= 1 and rec["frames_or_faces"] >= 2
    floor = Predictor.from_checkpoint(str(tmp_path / "x.bin"), "cpu", image_size=64) \
        .predict_photo(_frame_png(video, tmp_path))
    assert floor["fake_probability"] is None  # a photo has no track to confirm a weak face


def _frame_png(video, tmp_path):
    from faces.video import iter_frames
    _, _, rgb = next(iter(iter_frames(video, 1)))
    path = str(tmp_path / "frame.png")
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def test_a_one_frame_weak_box_cannot_decide():
    from faces.media import Face, Result, confirm, verdict
    r = Result("v.mp4", "video", sampled=8)
    r.faces = [Face(i, 0.0, 0, (0, 0, 50, 50), 0.1, prob=0.1, weak=True) for i in range(8)]
    r.faces.append(Face(3, 0.0, 1, (200, 0, 260, 60), 0.2, prob=0.99, weak=True))  # false box
    r.faces.append(Face(4, 0.0, 2, (300, 0, 360, 60), 0.9, prob=0.2))  # one clear detection
    confirm(r)
    assert sorted({f.track for f in r.faces}) == [0, 2]
    verdict(r, 0.5)
    assert r.track == 0 and not r.fake


def test_an_interrupted_deepfakebench_video_loses_only_its_own_files(tmp_path):
    """Redoing an interrupted video removes its frame and landmark files, nothing else; a frame
    folder that the tool did not claim is refused, untouched."""
    from faces.extract import _claim
    out = tmp_path / "c23"
    for folder, names in (("frames/v", ["000.png", "013.png", "notes.txt"]),
                          ("landmarks/v", ["000.npy", "keep.txt"]), (".extract/v", [".extracting"]),
                          ("frames/w", ["000.png"])):
        (out / folder).mkdir(parents=True)
        for name in names:
            (out / folder / name).write_text("sentinel")
    assert _claim(str(out), "v", "deepfakebench") is None
    assert sorted(os.listdir(out / "frames" / "v")) == ["notes.txt"]
    assert sorted(os.listdir(out / "landmarks" / "v")) == ["keep.txt"]
    problem = _claim(str(out), "w", "deepfakebench")
    assert "was not made by extract_faces" in problem
    assert (out / "frames" / "w" / "000.png").read_text() == "sentinel"
    assert not (out / ".extract" / "w").exists()
