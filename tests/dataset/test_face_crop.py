"""dataset/face_crop.py: the crop rule a training set's manifests say."""
import json


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
