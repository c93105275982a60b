"""tools/make_demo_dataset.py: the demo data is never built into a user's folder."""
import os

from helpers import intact, sentinels


def test_demo_tool_refuses_a_users_folder(tmp_path, capsys):
    from tools.make_demo_dataset import main
    user = sentinels(tmp_path / "data" / "ffpp" / "x.png", tmp_path / "data" / "y.txt")
    for out in (tmp_path / "data", tmp_path / "data" / "ffpp"):  # the folder and the one above
        assert main(["--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: refusing to build the demo data into")
        assert err.count("\n") == 1
    assert intact(user)
    assert sorted(os.listdir(tmp_path / "data")) == ["ffpp", "y.txt"]  # no temporary left
