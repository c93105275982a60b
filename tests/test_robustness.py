"""tools/robustness.py: bad options are one line and write nothing; a hand-edited table is one
line."""
import os

import pytest

from errors import UserError


def test_robustness_bad_options_are_one_line_and_write_nothing(tmp_path, image_list_cfg,
                                                               bare_checkpoint, capsys):
    from tools.robustness import main
    (tmp_path / "afile").write_text("the user's")
    (tmp_path / "videos.csv").write_text("path,label\n")
    base = ["--config", image_list_cfg, "--ckpt", bare_checkpoint, "--device", "cpu"]
    frames = ["--protocol", "frames", "--videos", str(tmp_path / "videos.csv")]
    before = sorted(os.listdir(tmp_path))
    for args, text in [(["--out", str(tmp_path / "afile")], "--out {}: is a file, expected a "
                                                            "folder"),
                       (frames + ["--margin", "inf"], "--margin: expected a number above 0 "
                                                      "and at most 10 (1.3 is usual), got inf"),
                       (frames + ["--margin", "nan"], "--margin: expected a number above 0 "
                                                      "and at most 10 (1.3 is usual), got nan"),
                       (frames + ["--margin", "0"], "--margin: expected a number above 0 "
                                                    "and at most 10 (1.3 is usual), got 0.0"),
                       (frames + ["--frames", "0"], "--frames: expected a number of frames from "
                                                    "1 to 10000000, got 0")]:
        assert main(base + args) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == f"error: {text.format(tmp_path / 'afile')}\n"
    assert sorted(os.listdir(tmp_path)) == before
    assert (tmp_path / "afile").read_text() == "the user's"


def test_hand_edited_tables_and_manifests_are_one_line(tmp_path):
    from experiments.reproduce import read_results
    from experiments.robustness import FIELDS, read_rows
    rob = tmp_path / "robustness.csv"
    rob.write_text(",".join(FIELDS) + "\nGB,1,0.9,oops,0.8,10\n")
    with pytest.raises(UserError, match="not a robustness.csv this tool wrote"):
        read_rows(str(rob))
    rob.write_text(",".join(FIELDS) + "\nGB,1,0.9\n")  # cut short
    with pytest.raises(UserError, match="another number of fields"):
        read_rows(str(rob))
    rob.write_bytes(b"\xff\xfe junk")
    with pytest.raises(UserError, match="not a robustness.csv"):
        read_rows(str(rob))
    table = tmp_path / "demo.csv"
    table.write_text("row,ours\nx,1\n")
    with pytest.raises(UserError, match="not a table this tool wrote"):
        read_results(str(table))
    from faces.manifest import read_manifest
    man = tmp_path / "manifest.jsonl"
    man.write_bytes(b"\xff\xfe")
    with pytest.raises(UserError, match="is not UTF-8 text"):
        read_manifest(str(man))
    man.write_text('{"video": "v", "frame": 9, "frames_total": 4, "crop": [0, 0, 8, 8], '
                   '"file": "v/0009.png"}\n')
    with pytest.raises(UserError, match=r"manifest.jsonl:1: not a manifest line"):
        read_manifest(str(man))  # frame 9 of a 4-frame video
    man.write_text('{"video": "v", "frame": 1, "frames_total": 4, "crop": [0, 0, 8, 8], '
                   '"file": "v/0001.png"}\n')
    (tmp_path / "manifest_meta.json").write_text('{"size": -5, "quality": 95}')
    with pytest.raises(UserError, match="size -5 is not a positive number"):
        read_manifest(str(man))
