"""Face extraction and scoring spread over processes (faces/shard.py): the split, --shard K/N and
--merge in-process, and torchrun (gloo, a subprocess) against one process."""
import csv
import filecmp
import json
import os
import sys

import cv2
import numpy as np
import pytest

import inference
from errors import UserError
from faces.shard import parse_shard, split
from helpers import ROOT

CK_ARGS = ["-d", "cpu", "-s", "32", "--num_workers", "0"]


# -- the split and the flag -----------------------------------------------------------------------

def test_shard_values_good_and_bad():
    assert parse_shard("1/1") == (1, 1) and parse_shard("3/4") == (3, 4)
    assert parse_shard(" 2 / 2 ") == (2, 2)
    for bad in ("3/2", "0/2", "1/0", "x", "", "1/2/3", "-1/2", "1.5/2", "1/"):
        with pytest.raises(UserError) as e:
            parse_shard(bad)
        assert str(e.value).startswith(f"--shard {bad}: expected K/N")


def test_split_is_disjoint_complete_deterministic_and_balanced_by_size():
    sizes = [100, 1, 1, 1, 1, 50, 49, 2, 0, 0]
    for n in (1, 2, 3, 7, 12):
        owner = split(sizes, n)
        assert owner == split(list(sizes), n) and all(0 <= s < n for s in owner)
    owner = split(sizes, 2)
    loads = [sum(s for s, o in zip(sizes, owner) if o == k) for k in (0, 1)]
    assert sorted(loads) == [102, 103]  # zero-byte files count as one byte
    assert owner[0] != owner[5] and owner[5] == owner[6]
    assert sorted(split([5] * 6, 3)) == [0, 0, 1, 1, 2, 2]  # equal sizes: equal counts


def test_a_failed_rank_stops_every_rank_with_its_reason(monkeypatch):
    """Plan.agree and Plan.run over a stand-in for the gloo group: rank 0 sees rank 1's error as
    one line (said with the entry point's flag) and stops; agreeing data returns every rank's."""
    import torch.distributed as dist

    from faces.shard import Plan, RankFailed
    others = []
    monkeypatch.setattr(dist, "all_gather_object",
                        lambda got, mine: got.__setitem__(slice(None), [mine] + others))
    plan = Plan(1, 2, ranks=True)
    others[:] = [(None, "b")]
    assert plan.agree(None, "a") == ["a", "b"]
    assert plan.run(lambda: "a") == ["a", "b"]
    others[:] = [("--input x: no such folder or list file", None)]
    with pytest.raises(RankFailed) as e:
        plan.run(lambda: "a")
    assert str(e.value) == "rank 1 failed: --input x: no such folder or list file"

    def fails():
        raise UserError("source y: no such folder or list file", arg="source")
    others[:] = [(None, "b")]
    sent = []
    monkeypatch.setattr(dist, "all_gather_object",
                        lambda got, mine: (sent.append(mine),
                                           got.__setitem__(slice(None), [mine] + others)))
    with pytest.raises(RankFailed) as e:
        plan.run(fails, {"source": "--input"})
    assert sent == [("--input y: no such folder or list file", None)]
    assert str(e.value) == "rank 0 failed: --input y: no such folder or list file"


# -- inference.py in-process: --shard K/N, --merge, resuming, refusals ----------------------------

@pytest.fixture(scope="module")
def checkpoint(run_checkpoint):
    return run_checkpoint[0]


@pytest.fixture()
def crops(tmp_path, make_faces):
    # sizes differ: the split goes by bytes
    folder = make_faces(tmp_path / "crops", [f"{i}.png" for i in range(5)],
                        shape=[(30 + 7 * i, 30) for i in range(5)])
    (folder / "bad.png").write_bytes(b"not a picture")
    return folder


def _score(checkpoint, crops, output, *extra):
    return inference.main(["-b", checkpoint, "-f", str(crops), *CK_ARGS, "--output", str(output),
                           *extra])


def test_shard_flags_through_inference_are_one_line(checkpoint, crops, tmp_path, capsys):
    out = tmp_path / "s.csv"
    for argv, says in (
            (["--shard", "3/2"], "error: --shard 3/2: expected K/N with 1 <= K <= N"),
            (["--shard", "x"], "error: --shard x: expected K/N"),
            (["--shard", "1/2", "--merge"], "error: --merge joins the parts of every shard: "
                                           "give it without --shard 1/2")):
        assert _score(checkpoint, crops, out, *argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(says) and err.count("\n") == 1, err
    assert inference.main(["-b", checkpoint, "-f", str(crops), *CK_ARGS, "--shard", "1/2"]) == 2
    assert capsys.readouterr().err.startswith("error: --shard 1/2: give --output FILE")
    assert not os.path.exists(out) and not os.path.exists(f"{out}.parts")


@pytest.mark.slow  # seven runs of inference.py
def test_shards_then_merge_give_the_rows_of_one_process(checkpoint, crops, tmp_path, capsys,
                                                        monkeypatch):
    one = tmp_path / "one.csv"
    assert _score(checkpoint, crops, one) == 1  # bad.png: exit 1, a row with its error
    lines_one = capsys.readouterr().out.splitlines()
    out = tmp_path / "sh.csv"
    assert _score(checkpoint, crops, out, "--merge") == 2
    assert "no parts beside --output" in capsys.readouterr().err
    statuses, lines = [], []
    for k in (2, 3):
        statuses.append(_score(checkpoint, crops, out, "--shard", f"{k}/3"))
        lines += [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("path:")]
    # a shard missing: one line naming it, nothing written
    assert _score(checkpoint, crops, out, "--merge") == 2
    err = capsys.readouterr().err
    assert err == f"error: --merge: shard 1/3 has not finished in {out}.parts: run it, then " \
                  "--merge again\n"
    assert not out.exists()
    # other arguments are refused next to rows of the first ones, naming what differs
    assert _score(checkpoint, crops, out, "--shard", "1/3", "--threshold", "0.7") == 2
    assert "(threshold: None there, 0.7 now)" in capsys.readouterr().err  # None: the default
    statuses.append(_score(checkpoint, crops, out, "--shard", "1/3"))
    lines += [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("path:")]
    assert sorted(lines) == sorted(ln for ln in lines_one if ln.startswith("path:"))
    assert statuses.count(1) == 1  # the shard holding bad.png
    # an interrupted merge leaves no half file (and the parts, for the next --merge)
    real = csv.DictWriter.writerows

    def cut(self, rows):
        rows = list(rows)
        real(self, rows[:2])
        raise KeyboardInterrupt
    monkeypatch.setattr(csv.DictWriter, "writerows", cut)
    assert _score(checkpoint, crops, out, "--merge") == 130
    assert not out.exists() and [f for f in os.listdir(tmp_path) if f.startswith(".sh")] == []
    monkeypatch.undo()
    assert _score(checkpoint, crops, out, "--merge") == 1
    assert out.read_bytes() == one.read_bytes()
    assert not os.path.exists(f"{out}.parts")


def test_a_rerun_scores_only_what_is_missing(checkpoint, crops, tmp_path, capsys):
    out = tmp_path / "sh.csv"
    assert _score(checkpoint, crops, out, "--shard", "1/1") == 1
    first = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("path:")]
    assert len(first) == 5
    parts = f"{out}.parts"
    chunks = [f for f in os.listdir(parts) if f.endswith(".json") and f != "key.json"]
    kept = json.load(open(os.path.join(parts, chunks[0])))
    os.remove(os.path.join(parts, chunks[0]))  # as if the run had died before this chunk ...
    json.dump(kept[:2], open(os.path.join(parts, "1-of-1.000000.json"), "w"))  # ... after 2 rows
    os.remove(os.path.join(parts, "1-of-1.done"))
    assert _score(checkpoint, crops, out, "--shard", "1/2") in (0, 1)
    assert _score(checkpoint, crops, out, "--shard", "2/2") in (0, 1)
    said = capsys.readouterr()
    again = [ln for ln in said.out.splitlines() if ln.startswith("path:")] + \
        [ln for ln in said.err.splitlines() if ln.startswith("skipped")]
    assert len(again) == 4  # only the 4 inputs without a row
    assert not any(e["input"] in ln for e in kept[:2] for ln in again)
    (tmp_path / "sh.csv.parts" / "notes.txt").write_text("the user's")  # stays, and its folder
    (tmp_path / "sh.csv.parts" / "7-of-x.json").write_text("the user's too")
    assert _score(checkpoint, crops, out, "--merge") == 1
    rows = list(csv.DictReader(open(out)))
    assert [r["path"] for r in rows] == sorted(str(p) for p in crops.iterdir())
    assert sorted(os.listdir(parts)) == ["7-of-x.json", "notes.txt"]
    assert (tmp_path / "sh.csv.parts" / "notes.txt").read_text() == "the user's"


# -- extraction in-process: --shard K/N and --merge ------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("dlib")
    from helpers import hopper_video
    folder = tmp_path_factory.mktemp("videos")
    for i, n in enumerate((3, 5, 4, 2)):
        hopper_video(folder / f"clip{i}.avi", frames=n)
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    return folder


def _extract(videos, out, *extra):
    from tools import extract_faces
    return extract_faces.main(["--input", str(videos), "--out", str(out), "--frames", "2",
                               "--workers", "1", *extra])


def _tree(folder):
    """Every file under ``folder`` (but the lock) -> its bytes."""
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f != ".lock":
                path = os.path.join(dirpath, f)
                out[os.path.relpath(path, folder)] = open(path, "rb").read()
    return out


@pytest.mark.slow
def test_extraction_shards_and_merge_give_the_files_of_one_process(videos, tmp_path, capsys):
    assert _extract(videos, tmp_path / "one") == 1  # the broken video
    sh = tmp_path / "sh"
    sh.mkdir()
    (sh / ".shards").mkdir()
    (sh / ".shards" / "mine.txt").write_text("the user's")
    assert _extract(videos, sh, "--shard", "2/2") in (0, 1)
    assert _extract(videos, sh, "--merge") == 2
    err = capsys.readouterr().err
    assert err.endswith(f"error: --merge: shard 1/2 has not finished in {sh}/.shards: run it, "
                        "then --merge again\n")
    assert not (sh / "manifest.jsonl").exists()
    assert _extract(videos, sh, "--shard", "1/2", "--margin", "1.5") == 2
    assert "(margin: 1.3 there, 1.5 now)" in capsys.readouterr().err
    assert _extract(videos, sh, "--shard", "1/2") in (0, 1)
    assert _extract(videos, sh, "--merge") == 0
    mine = _tree(sh)
    assert mine.pop(".shards/mine.txt") == b"the user's"  # the user's file and its folder stay
    assert sorted(os.listdir(sh / ".shards")) == ["mine.txt"]
    assert mine == _tree(tmp_path / "one")
    assert b"clip3/0001.png" in mine["manifest.jsonl"]
    assert _extract(videos, sh, "--shard", "x") == 2
    assert capsys.readouterr().err.endswith("error: --shard x: expected K/N, shard K of N "
                                            "(1/4, 2/4, 3/4, 4/4)\n")


def test_an_interrupted_extraction_merge_leaves_no_half_manifest(videos, tmp_path, monkeypatch):
    import fileio
    one, sh = tmp_path / "one", tmp_path / "sh"
    assert _extract(videos, one) == 1
    assert _extract(videos, sh, "--shard", "1/1") == 1
    real = fileio.atomic_write

    def cut(path, write, *a, **kw):
        def half(fh):
            fh.write("{\"video\": ")
            raise KeyboardInterrupt
        return real(path, half if path.endswith("manifest.jsonl") else write, *a, **kw)
    monkeypatch.setattr(fileio, "atomic_write", cut)
    assert _extract(videos, sh, "--merge") == 130
    assert not (sh / "manifest.jsonl").exists()
    assert [f for f in os.listdir(sh) if f.startswith(".manifest")] == []  # no temporary left
    assert os.listdir(sh / ".shards")  # the shards' records stay for the next --merge
    monkeypatch.undo()
    assert _extract(videos, sh, "--merge") == 0
    assert _tree(sh) == _tree(one)


@pytest.mark.slow
def test_a_video_marked_done_with_a_crop_missing_is_redone(videos, tmp_path, capsys):
    one, sh = tmp_path / "one", tmp_path / "sh"
    assert _extract(videos, one) == 1
    assert _extract(videos, sh, "--shard", "1/1") == 1
    os.remove(sh / "clip1" / "0004.png")  # lost after the video was marked done
    (sh / "clip1" / "notes.txt").write_text("the user's")
    (sh / "clip2" / "0000.png").write_bytes(b"")  # cut to nothing
    capsys.readouterr()
    assert _extract(videos, sh, "--shard", "1/1") == 1
    said = capsys.readouterr()
    assert "videos: 2 done, 2 already done, 1 failed" in said.out
    assert "video clip1: marked done, but its crops or manifest lines are not all there: " \
           "redone" in said.err
    assert _extract(videos, sh, "--merge") == 0
    mine = _tree(sh)
    assert mine.pop("clip1/notes.txt") == b"the user's"
    assert mine == _tree(one)


@pytest.mark.slow  # ten runs of inference.py with a face detector
def test_video_and_photo_shards_then_merge_give_the_records_of_one_process(checkpoint, videos,
                                                                           tmp_path):
    argv = ["-b", checkpoint, "--video", str(videos), *CK_ARGS, "--frames", "2"]
    one, sh = tmp_path / "one.json", tmp_path / "sh.json"
    assert inference.main(argv + ["--output", str(one)]) == 1  # the broken video
    assert inference.main(argv + ["--output", str(sh), "--shard", "2/2"]) in (0, 1)
    assert inference.main(argv + ["--output", str(sh), "--shard", "1/2"]) in (0, 1)
    assert inference.main(argv + ["--output", str(sh), "--merge"]) == 1
    assert sh.read_bytes() == one.read_bytes()
    assert len(json.loads(one.read_text())) == 5
    # --detect photos: a frame of each video, and a wall without a face
    photos = tmp_path / "photos"
    photos.mkdir()
    for v in ("clip0", "clip1"):
        cap = cv2.VideoCapture(str(videos / f"{v}.avi"))
        cv2.imwrite(str(photos / f"{v}.png"), cap.read()[1])
        cap.release()
    cv2.imwrite(str(photos / "wall.png"), np.full((200, 200, 3), 120, np.uint8))
    argv = ["-b", checkpoint, "-f", str(photos), "--detect", *CK_ARGS]
    one, sh = tmp_path / "one.csv", tmp_path / "sh.csv"
    assert inference.main(argv + ["--output", str(one)]) == 1  # the wall
    for k in ("1/3", "2/3", "3/3"):
        assert inference.main(argv + ["--output", str(sh), "--shard", k]) in (0, 1)
    assert inference.main(argv + ["--output", str(sh), "--merge"]) == 1
    assert sh.read_bytes() == one.read_bytes()
    assert [r["kind"] for r in csv.DictReader(open(one))] == ["photo"] * 3


# -- torchrun: 2 and 3 ranks (gloo) against one process ----------------------------------------

def _torchrun(ranks, port, what, argv, kill=None):
    from helpers import torchrun
    return torchrun(ranks, port, [os.path.join(ROOT, "tests", "shard_worker.py"), what, *argv],
                    env={"RECCE_TEST_KILL": kill or ""})


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_torchrun_scoring_gives_the_rows_of_one_process_and_survives_a_killed_rank(
        checkpoint, crops, tmp_path):
    os.remove(crops / "bad.png")
    for i in range(5, 9):
        cv2.imwrite(str(crops / f"{i}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
    one = tmp_path / "one.csv"
    assert _score(checkpoint, crops, one) == 0
    argv = ["-b", checkpoint, "-f", str(crops), *CK_ARGS]
    two = tmp_path / "two.csv"
    proc = _torchrun(2, 29631, "inference", argv + ["--output", str(two)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes() and not os.path.exists(f"{two}.parts")
    assert sum(ln.startswith("path:") for ln in proc.stdout.splitlines()) == 9, \
        proc.stdout + proc.stderr
    killed = tmp_path / "killed.csv"
    proc = _torchrun(2, 29632, "inference", argv + ["--output", str(killed)], kill="1:2")
    assert proc.returncode != 0 and not killed.exists()
    proc = _torchrun(3, 29633, "inference", argv + ["--output", str(killed)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert killed.read_bytes() == one.read_bytes()
    assert sum(ln.startswith("path:") for ln in proc.stdout.splitlines()) < 9  # resumed


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_torchrun_extraction_gives_the_files_of_one_process_and_survives_a_killed_rank(
        videos, tmp_path):
    assert _extract(videos, tmp_path / "one") == 1
    argv = ["--input", str(videos), "--frames", "2", "--workers", "1"]
    proc = _torchrun(2, 29634, "extract", argv + ["--out", str(tmp_path / "two")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(tmp_path / "two") == _tree(tmp_path / "one")
    assert "videos: 4 done, 0 already done, 1 failed; frames written: 8" in proc.stdout
    proc = _torchrun(2, 29635, "extract", argv + ["--out", str(tmp_path / "k")], kill="1:2")
    assert proc.returncode != 0 and not (tmp_path / "k" / "manifest.jsonl").exists()
    done = [v for v in os.listdir(tmp_path / "k") if (tmp_path / "k" / v / ".done").exists()]
    assert done  # rank 1 died after its second video: one of them at least was a good one
    proc = _torchrun(3, 29636, "extract", argv + ["--out", str(tmp_path / "k")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _tree(tmp_path / "k") == _tree(tmp_path / "one")
    assert f"videos: {4 - len(done)} done, {len(done)} already done" in proc.stdout  # resumed
    assert filecmp.cmp(tmp_path / "k" / "manifest.jsonl", tmp_path / "one" / "manifest.jsonl",
                       shallow=False)
