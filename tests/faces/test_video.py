"""faces/video.py: the videos of a folder or a list, the frames sampled, a truncated, oversized
or lying video; and faces/crop.py's box."""
import pytest

from errors import UserError
from faces.crop import crop_box
from faces.video import frame_indices


def test_a_folder_of_videos_holds_files_only(tmp_path):
    """Extraction's --input and inference.py's --video read a folder the same way: video files by
    extension in any case, sorted; a subfolder named like a video is not one."""
    from faces.video import list_videos
    for name in ("b.MP4", "a.avi", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "c.mp4").mkdir()
    expected = [str(tmp_path / "a.avi"), str(tmp_path / "b.MP4")]
    assert list_videos(str(tmp_path)) == expected == list_videos(str(tmp_path), list_file=True)
    assert list_videos(expected[1]) == [expected[1]]  # --video: a file is the video
    listed = tmp_path / "list.txt"
    listed.write_text(f"{expected[1]}\n\n{expected[0]}\n")
    assert list_videos(str(listed), list_file=True) == expected  # --input: a file lists videos
    with pytest.raises(UserError, match=r"^source \S+nope: no such folder or list file$"):
        list_videos(str(tmp_path / "nope"), list_file=True)
    with pytest.raises(UserError, match=r"^source \S+nope: no such file or folder$"):
        list_videos(str(tmp_path / "nope"))
    (tmp_path / "a.mp4").write_bytes(b"")
    assert len(list_videos(str(tmp_path))) == 3
    with pytest.raises(UserError, match="a.avi and .*a.mp4 would share the output folder 'a'"):
        list_videos(str(tmp_path), distinct_ids=True)


def test_frame_sampling_and_crop_geometry():
    assert frame_indices(100, 5) == [0, 25, 50, 74, 99]
    assert frame_indices(10, every=3) == [0, 3, 6, 9]
    assert frame_indices(3, 32) == [0, 1, 2]
    assert crop_box((10, 10, 30, 50), 100, 100, 1.3) == (0, 4, 46, 56)  # clipped at the left edge


def _run(args, capsys):
    import inference
    code = inference.main(args)
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


@pytest.mark.slow
def test_truncated_oversized_and_lying_videos(tmp_path, capsys, monkeypatch, make_checkpoint):
    """A video cut at 60 % is scored on what decodes and said to be (exit 1); frames above the
    pixel budget are refused; a header claiming absurdly many frames is not believed."""
    pytest.importorskip("dlib")  # the video's faces are found with dlib
    from faces import video as fv
    from helpers import hopper_video
    full = hopper_video(tmp_path / "full.avi", frames=10)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:int(len(data) * 0.6)])
    info = {}
    got = list(fv.iter_frames(str(cut), frames=10, info=info))
    assert info["wanted"] == 10 and info["decoded"] == len(got) < 10
    ckpt = make_checkpoint(tmp_path / "m.bin")
    code, lines, err = _run(["-b", ckpt, "--video", str(cut), "-d", "cpu", "-s", "64",
                             "--frames", "10"], capsys)
    assert code == 1 and len(lines) == 1 and "fake probability" in lines[0]
    assert f"warning: {cut}: only {len(got)} of the 10 chosen frames could be decoded" in err
    code, lines, err = _run(["-b", ckpt, "--video", full, "-d", "cpu", "-s", "64",
                             "--max_pixels", "1000"], capsys)
    assert code == 1 and "400 x 300 pixels, more than the limit of 1000" in err
    monkeypatch.setattr(fv, "MAX_HEADER_FRAMES", 5)  # the header's 10 is now "absurd": counted
    info = {}
    assert len(list(fv.iter_frames(full, frames=3, info=info))) == 3 and info["total"] == 10
