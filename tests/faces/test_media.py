"""faces/media.py, inference.py on videos and photos: test media built from a real photograph
(matplotlib's Grace Hopper, the demo's face source), dlib detection, tracks and the faces they
confirm, crops equal to extract_faces', the pictures of -v."""
import csv
import json
import os

import cv2
import numpy as np
import pytest
import torch

from helpers import grace_hopper

pytest.importorskip("dlib")

CANVAS = (400, 640)  # height, width


def _hopper(size=(180, 210)):
    return cv2.cvtColor(grace_hopper(size), cv2.COLOR_BGR2RGB)


def _video(path, frames, faces=1, blank=False, fourcc="MJPG"):
    face = _hopper()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (CANVAS[1], CANVAS[0]))
    for f in range(frames):
        canvas = np.full(CANVAS + (3,), 90, np.uint8)
        if not blank:
            for k in range(faces):
                oy, ox = 40 + 10 * f, 20 + 330 * k + 15 * f
                canvas[oy:oy + face.shape[0], ox:ox + face.shape[1]] = face
        writer.write(cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
    writer.release()
    return str(path)


@pytest.fixture(scope="module")
def media(tmp_path_factory, make_checkpoint):
    d = tmp_path_factory.mktemp("media")
    ckpt = make_checkpoint(d / "m.bin")
    # a detector without a reconstruction: Grad-CAM only
    make_checkpoint(d / "x.bin", "Xception", config={"model": {"name": "Xception"}})
    vids = d / "videos"
    vids.mkdir()
    _video(vids / "one.avi", 6)
    _video(vids / "TWO.AVI", 4, faces=2)
    _video(vids / "none.avi", 3, blank=True)
    data = open(_video(d / "full.mp4", 6, fourcc="mp4v"), "rb").read()
    (vids / "truncated.mp4").write_bytes(data[:len(data) // 2])  # its index (moov) is lost
    (vids / "text.mp4").write_text("not a video at all")
    return d, ckpt, vids


def _run(args, capsys):
    import inference
    code = inference.main(args)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


@pytest.mark.slow
def test_videos_lines_tracks_broken_and_no_face(media, tmp_path, capsys):
    d, ckpt, vids = media
    out = tmp_path / "r.json"
    frames = tmp_path / "f.csv"
    code, lines, err = _run(["-b", ckpt, "--video", str(vids), "-s", "32", "-d", "cpu",
                             "--frames", "4", "--output", str(out), "--frames_output",
                             str(frames)], capsys)
    assert code == 1  # some videos could not be scored
    by_name = {os.path.basename(line.split(" \t\t|")[0][len("path: "):]): line for line in lines}
    assert set(by_name) == {"TWO.AVI", "none.avi", "one.avi"}
    one = by_name["one.avi"]
    prob = float(one.split("fake probability: ")[1].split()[0])
    verdict = "fake" if prob >= 0.5 else "real"
    assert one == (f"path: {vids / 'one.avi'} \t\t| fake probability: {prob:.4f} \t| "
                   f"prediction: {verdict} \t| frames: 4")
    assert by_name["none.avi"] == f"path: {vids / 'none.avi'} \t\t| no face found \t| frames: 3"
    # two people: the main person's line says its track, the other person has a line of its own
    two = [line for line in lines if "TWO.AVI" in line]
    assert len(two) == 2 and two[0].endswith("\t| track: 0") and two[1].endswith("\t| track: 1")
    assert all("\t| frames: 4 \t|" in line for line in two)
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 2 and any("truncated.mp4" in s for s in skipped)
    said = err.strip().splitlines()
    # the threshold and how the probabilities were made, once; no decoder noise of FFmpeg's own
    assert said[0] == ("threshold: 0.5000 (the default); raw probabilities (the checkpoint has "
                       "no calibration: python tools/calibrate.py makes one)")
    assert said[1] == "faces cut by the box crop rule (the checkpoint names none)"
    assert said[2:-1] == skipped
    assert err.strip().splitlines()[-1] == f"written: {out}, {frames}"  # what was written
    assert any("text.mp4" in s for s in skipped)
    rows = {os.path.basename(r["path"]): r for r in json.loads(out.read_text())}
    assert set(rows["one.avi"]) == {"path", "kind", "fake_probability", "prediction",
                                    "frames_or_faces", "tracks", "track", "persons", "error",
                                    "raw_probability", "threshold", "threshold_source",
                                    "backend", "precision", "face_crop", "threshold_lower",
                                    "threshold_level", "threshold_fpr_upper",
                                    "threshold_supported"}
    assert (rows["one.avi"]["backend"], rows["one.avi"]["precision"]) == ("torch", "fp32")
    # no calibration: the raw probability is the probability, judged at the default 0.5
    assert rows["one.avi"]["raw_probability"] == rows["one.avi"]["fake_probability"]
    assert (rows["one.avi"]["threshold"], rows["one.avi"]["threshold_source"]) == (0.5, "default")
    assert rows["TWO.AVI"]["persons"] == 2 and rows["one.avi"]["persons"] == 1
    assert rows["one.avi"]["tracks"] == 1 and rows["TWO.AVI"]["tracks"] == 2
    assert rows["text.mp4"]["error"] and rows["none.avi"]["fake_probability"] is None
    assert rows["none.avi"]["error"] == "no face found"  # a reason wherever nothing was scored
    assert rows["one.avi"]["error"] is None
    face_rows = list(csv.DictReader(open(frames)))
    assert list(face_rows[0]) == ["path", "frame", "time", "track", "x1", "y1", "x2", "y2",
                                  "detector_score", "fake_probability", "raw_probability"]
    one_rows = [r for r in face_rows if r["path"].endswith("one.avi")]
    assert len(one_rows) == 4
    assert np.mean([float(r["fake_probability"]) for r in one_rows]) == \
        pytest.approx(prob, abs=1e-4)


@pytest.mark.slow
def test_a_video_face_scores_as_its_extracted_crop(media, tmp_path, capsys):
    from faces.extract import extract
    d, ckpt, vids = media
    extract([str(vids / "one.avi")], str(tmp_path / "crops"), {"name": "dlib"}, frames=3,
            progress=False)
    frames = tmp_path / "f.csv"
    code, _, _ = _run(["-b", ckpt, "--video", str(vids / "one.avi"), "-s", "32", "-d", "cpu",
                       "--frames", "3", "--frames_output", str(frames)], capsys)
    assert code == 0
    video = {int(r["frame"]): float(r["fake_probability"]) for r in csv.DictReader(open(frames))}
    code, lines, _ = _run(["-b", ckpt, "-f", str(tmp_path / "crops" / "one"), "-s", "32", "-d",
                           "cpu", "--output", str(tmp_path / "c.csv")], capsys)
    folder = {int(os.path.basename(r["path"])[:4]): float(r["fake_probability"])
              for r in csv.DictReader(open(tmp_path / "c.csv"))}
    assert sorted(video) == sorted(folder) and len(video) == 3
    for k in video:
        assert abs(video[k] - folder[k]) < 1e-5


@pytest.mark.slow
def test_photos_with_exif_rotation_threshold_from_and_visualize(media, tmp_path, capsys):
    from PIL import Image
    d, ckpt, _ = media
    photos = tmp_path / "photos"
    photos.mkdir()
    canvas = np.full((300, 420, 3), 200, np.uint8)
    canvas[40:250, 100:280] = _hopper()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; upright only when the orientation is applied
    Image.fromarray(np.ascontiguousarray(np.rot90(canvas, 1))).save(photos / "phone.jpg",
                                                                     quality=95, exif=exif)
    cv2.imwrite(str(photos / "wall.png"), np.full((200, 200, 3), 120, np.uint8))
    (tmp_path / "metrics.json").write_text(json.dumps({"EER_threshold": 0.3}))
    code, lines, err = _run(["-b", ckpt, "-f", str(photos), "--detect", "-s", "32", "-d", "cpu",
                             "--threshold_from", str(tmp_path / "metrics.json"), "-v",
                             "--vis_dir", str(tmp_path / "vis")], capsys)
    assert code == 1  # the wall has no face
    assert "threshold: 0.3000 (EER threshold of" in err
    phone = [line for line in lines if "phone.jpg" in line][0]
    prob = float(phone.split("fake probability: ")[1].split()[0])
    assert phone.endswith(f"prediction: {'fake' if prob >= 0.3 else 'real'} \t| faces: 1")
    wall = [line for line in lines if "wall.png" in line][0]
    assert wall.endswith("| no face found \t| faces: 0")
    pad, side = _side_panel((300, 420))  # the photo upright
    # the photo and its side panel: the face's two maps side by side
    assert cv2.imread(str(tmp_path / "vis" / "phone_annotated.png")).shape[1] == \
        420 + pad + 2 * (side + pad)
    code, _, _ = _run(["-b", ckpt, "--video", str(media[2] / "one.avi"), "-s", "32", "-d", "cpu",
                       "--frames", "3", "-v", "--vis_dir", str(tmp_path / "vv")], capsys)
    assert code == 0
    assert sorted(os.listdir(tmp_path / "vv")) == ["one_annotated.mp4", "one_timeline.png"]
    cap = cv2.VideoCapture(str(tmp_path / "vv" / "one_annotated.mp4"))
    # as long as the source at its frame rate (6 frames at 10 fps), H.264 (browsers play it)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and cap.get(cv2.CAP_PROP_FPS) == 10
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode().lower()
    assert fourcc in ("avc1", "h264")
    ok, frame = cap.read()
    pad, side = _side_panel(CANVAS)
    # the frame and its side panel: the legend, and the face's two maps side by side
    assert ok and frame.shape[1] == CANVAS[1] + pad + 2 * (side + pad)
    cap.release()
    assert not [f for f in os.listdir(tmp_path / "vv") if f.startswith(".")]  # no temporary


def test_retinaface_plumbing_with_random_weights(media, tmp_path, capsys):
    """Random RetinaFace weights find random 'faces': this checks the wiring, not detection."""
    from faces.finders.retinaface import RetinaFaceNet
    d, ckpt, vids = media
    torch.manual_seed(0)
    weights = tmp_path / "mobilenet0.25_Final.pth"
    torch.save(RetinaFaceNet("mobilenet0.25").state_dict(), weights)
    code, lines, err = _run(["-b", ckpt, "--video", str(vids / "one.avi"), "-s", "32", "-d", "cpu",
                             "--frames", "2", "--detector", "retinaface", "--detector_weights",
                             str(weights)], capsys)
    assert code in (0, 1) and len(lines) == 1 and lines[0].startswith(f"path: {vids / 'one.avi'}")
    assert lines[0].endswith("frames: 2") or "frames:" in lines[0]
    code, _, err = _run(["-b", ckpt, "--video", str(vids / "one.avi"), "--detector", "retinaface"],
                        capsys)
    assert code == 2 and "needs --detector_weights" in err


def _side_panel(shape):
    """(pad, side of a map) of the side panel of a picture of ``shape`` (height, width)."""
    from faces.media import Visualizer
    s = Visualizer._scale(np.zeros(tuple(shape) + (3,), np.uint8))
    return int(10 * s), int(210 * s)


SIDE, TOP = 128, 28 + 22  # at -s 32 a panel is 128 px; above it the score and its title
FOOT = 40  # beneath a map: its colour bar, its ends and its scale


@pytest.mark.slow
def test_panels_show_both_maps_for_recce_and_grad_cam_alone_for_xception(media, tmp_path, capsys):
    """inference.py -v: face | reconstruction | difference | Grad-CAM for RECCE, face | Grad-CAM
    for Xception; the Grad-CAM panel is this face's map on its 0-1 scale, and a colour bar is
    beneath each map and only there. No library warning on the way."""
    import warnings

    import inference
    from dataset import read_rgb
    from dataset.transforms import eval_transforms
    from faces import Predictor
    from model.cam import grad_cam
    from model.heatmap import heat_map, heat_ramp
    d, ckpt, _ = media
    faces = tmp_path / "f"
    faces.mkdir()
    cv2.imwrite(str(faces / "a.png"), _hopper((64, 64))[:, :, ::-1])
    for path, cols, maps in ((ckpt, 4, 2), (str(d / "x.bin"), 2, 1)):
        vis = tmp_path / os.path.basename(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert inference.main(["-b", path, "-f", str(faces), "-s", "32", "-d", "cpu", "-v",
                                   "--vis_dir", str(vis), "--num_workers", "0"]) == 0
        assert f"written: {vis}{os.sep}" in capsys.readouterr().err
        img = cv2.imread(str(vis / "a.png"))
        assert img.shape == (TOP + SIDE + FOOT, cols * SIDE, 3)
        det = Predictor.from_checkpoint(path, device="cpu", image_size=32)
        x = eval_transforms(det.spec)(image=read_rgb(str(faces / "a.png")))["image"]
        want = heat_map(grad_cam(det.model, x[None])[0], SIDE, cv2.INTER_NEAREST, 1.0)
        got = img[TOP:TOP + SIDE, (cols - 1) * SIDE:]
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 1
        bars = img[TOP + SIDE + 2:TOP + SIDE + 10]
        has_bar = [np.array_equal(bars[:, c * SIDE + 4:(c + 1) * SIDE - 4],
                                  heat_ramp(SIDE - 8, 8)) for c in range(cols)]
        assert has_bar == [c >= cols - maps for c in range(cols)]


@pytest.mark.slow
def test_without_grad_cam_the_pictures_go_on_with_one_line(media, tmp_path, capsys, monkeypatch):
    """grad-cam missing (its import fails): one stderr line naming `pip install grad-cam`, said
    once; RECCE's panels keep the reconstruction difference, Xception's the face, the photo's
    side panel the difference map."""
    import sys

    import model.cam
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import pytorch_grad_cam fails
    monkeypatch.setattr(model.cam, "_said", [])
    d, ckpt, _ = media
    faces = tmp_path / "f"
    faces.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(faces / name), _hopper((64, 64))[:, :, ::-1])
    args = ["-f", str(faces), "-s", "32", "-d", "cpu", "-v", "--num_workers", "0"]
    code, lines, err = _run(["-b", ckpt, *args, "--vis_dir", str(tmp_path / "r")], capsys)
    assert code == 0 and len(lines) == 2
    said = [line for line in err.splitlines() if "pip install grad-cam" in line]
    assert len(said) == 1, err
    for name in ("a.png", "b.png"):
        assert cv2.imread(str(tmp_path / "r" / name)).shape == (TOP + SIDE + FOOT, 3 * SIDE, 3)
    code, _, err = _run(["-b", str(d / "x.bin"), *args, "--vis_dir", str(tmp_path / "x")], capsys)
    assert code == 0 and "pip install grad-cam" not in err  # said once
    assert cv2.imread(str(tmp_path / "x" / "a.png")).shape == (TOP + SIDE, SIDE, 3)
    photo = tmp_path / "photo.png"
    canvas = np.full((300, 420, 3), 200, np.uint8)
    canvas[40:250, 100:280] = _hopper()
    cv2.imwrite(str(photo), canvas[:, :, ::-1])
    code, _, _ = _run(["-b", ckpt, "-i", str(photo), "--detect", "-s", "32", "-d", "cpu", "-v",
                       "--vis_dir", str(tmp_path / "p")], capsys)
    pad, side = _side_panel((300, 420))
    assert code == 0
    assert cv2.imread(str(tmp_path / "p" / "photo_annotated.png")).shape[1] == \
        420 + pad + side + pad


@pytest.mark.slow
def test_two_videos_of_one_name_keep_their_own_pictures(tmp_path, capsys, make_checkpoint):
    import shutil

    from helpers import hopper_video
    folder = tmp_path / "v"
    folder.mkdir()
    hopper_video(folder / "clip.avi", frames=3)
    shutil.copy(folder / "clip.avi", folder / "clip.mkv")  # the same stem, another extension
    ckpt = make_checkpoint(tmp_path / "m.bin")
    vis = tmp_path / "vis"
    code, lines, _ = _run(["-b", ckpt, "--video", str(folder), "-d", "cpu", "-v",
                           "--vis_dir", str(vis), "--frames", "2", "-s", "64"], capsys)
    assert code == 0 and len(lines) == 2
    assert {"clip_avi_timeline.png", "clip_mkv_timeline.png"} <= set(os.listdir(vis))


@pytest.mark.slow
def test_false_boxes_are_not_faces(tmp_path, capsys, make_checkpoint):
    """scikit-image's astronaut: dlib also boxes her mission patch (score about 0.12); the
    default minimum detector score drops it, keeping the face; without it the patch is a face."""
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    ckpt = make_checkpoint(tmp_path / "m.bin")
    base = ["-b", ckpt, "-i", str(photo), "--detect", "-d", "cpu", "-s", "64",
            "--frames_output", str(tmp_path / "f.csv")]
    code, lines, _ = _run(base, capsys)
    assert code == 0 and lines[0].endswith("| faces: 1")
    face = next(csv.DictReader(open(tmp_path / "f.csv")))
    assert float(face["detector_score"]) > 1.0 and float(face["y1"]) < 200  # the face, up top
    code, lines, _ = _run(base + ["--min_face_score", "0"], capsys)
    assert code == 0 and lines[0].endswith("| faces: 2")  # the patch, as before
    code, lines, _ = _run(base + ["--min_face_size", "100"], capsys)
    assert lines[0].endswith("| no face found \t| faces: 0")  # both boxes are about 90 px


def test_a_long_video_says_how_far_it_is(media, tmp_path, capsys, monkeypatch):
    from faces import media as fm
    monkeypatch.setattr(fm, "PROGRESS_EVERY", 0.0)
    d, ckpt, vids = media
    code, _, err = _run(["-b", ckpt, "--video", str(vids / "one.avi"), "-s", "32", "-d", "cpu",
                         "--frames", "3"], capsys)
    assert code == 0 and "scoring one.avi: 3 of 3 frames" in err


# -- a face found when it is there ----------------------------------------------------------------
def _two_small_hoppers(path, frames=6):
    """Grace Hopper's photograph twice in a 560 x 300 video, 70 px wide (dlib's boxes 37 px): dlib
    scores the faces under its 0.5 floor."""
    face = cv2.resize(grace_hopper(), (70, 82), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (560, 300))
    for f in range(frames):
        canvas = np.full((300, 560, 3), 90, np.uint8)
        for x in (60, 360):  # still: every frame scores alike (0.27 and 0.34 here)
            canvas[90:172, x:x + 70] = face
        writer.write(canvas)
    writer.release()
    return str(path)


@pytest.mark.slow
def test_small_clear_faces_confirmed_by_their_tracks(tmp_path, make_checkpoint):
    from faces import Predictor
    from faces.finders.dlib_hog import DlibFinder
    from faces.video import iter_frames
    video = _two_small_hoppers(tmp_path / "hopper.avi")
    scores = [d.score for _, _, rgb in iter_frames(video, 6) for d in DlibFinder()(rgb)]
    assert len(scores) >= 6 and max(scores) < 0.5  # under the floor: once "no face found"
    xception = make_checkpoint(tmp_path / "x.bin", "Xception",
                               config={"model": {"name": "Xception"}})
    rec = Predictor.from_checkpoint(xception, "cpu", image_size=64) \
        .predict_video(video, frames=6)
    assert rec["error"] is None and rec["fake_probability"] is not None
    assert rec["persons"] >= 1 and rec["frames_or_faces"] >= 2
    floor = Predictor.from_checkpoint(xception, "cpu", image_size=64) \
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
