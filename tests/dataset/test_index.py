"""dataset/index.py: index files (pickles of this project and of torch.save, CSV and JSON lines),
each bad line named by file and line, and a pickle that would run code refused unread."""
import os
import pickle

import pytest
import torch

from dataset import build_dataset
from dataset.index import load_pickle_index
from errors import UserError
from helpers import TF, image_list_tree


def _csv_index(tmp_path, demo_root, text, name="index.csv", encoding="utf-8"):
    root = image_list_tree(demo_root, tmp_path / "d", videos=1, frames=1)
    real = os.path.relpath(os.path.join(root, "real", "v0", os.listdir(f"{root}/real/v0")[0]),
                           tmp_path)
    (tmp_path / name).write_bytes(text.format(real=real).encode(encoding))
    return str(tmp_path / name)


@pytest.mark.parametrize("text,encoding,match", [
    ("path,label\n{real},0\ncaf\xe9.png,1\n", "latin-1", "index.csv is not UTF-8 text"),
    ("path,label\n{real},0\n{real},0,extra\n", "utf-8", r"index.csv:3: 3 fields, the header has 2"),
    ("path,label\n{real},0\n,1\n", "utf-8", r"index.csv:3: the path is empty"),
    ("path,label\n{real},2\n", "utf-8", r"index.csv:2 has label '2'"),
    ("name,y\n{real},0\n", "utf-8", "needs a header with 'path' and 'label'"),
])
def test_bad_csv_index_names_file_and_line(tmp_path, demo_root, text, encoding, match):
    path = _csv_index(tmp_path, demo_root, text, encoding=encoding)
    with pytest.raises(UserError, match=match):
        build_dataset("ImageList", {"index": path, "transforms": TF})


def test_csv_with_byte_order_mark_is_read(tmp_path, demo_root):
    path = _csv_index(tmp_path, demo_root, "\ufeffpath,label\n{real},0\n", encoding="utf-8")
    assert build_dataset("ImageList", {"index": path, "transforms": TF}).labels == [0]


@pytest.mark.parametrize("line,match", [
    ('{{"path": "{real}", "label": 0.9}}', r"index.jsonl:1 has label 0.9"),
    ('{{"path": null, "label": 1}}', r"index.jsonl:1: the path is empty or not text"),
    ('["{real}", 0]', r"index.jsonl:1: expected a JSON object"),
    ('{{"path": "{real}", "label": 1', r"index.jsonl:1: not a JSON line"),
])
def test_bad_jsonl_index(tmp_path, demo_root, line, match):
    path = _csv_index(tmp_path, demo_root, line + "\n", name="index.jsonl")
    with pytest.raises(UserError, match=match):
        build_dataset("ImageList", {"index": path, "transforms": TF})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch", "pickle"])
def test_malicious_index_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "train_c23.pickle"
    payload = [("a.png", 0), _Evil(marker)]
    if writer == "torch":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(payload, fh)
    with pytest.raises(UserError, match="train_c23.pickle"):
        load_pickle_index(str(path))
    assert not marker.exists()


def test_plain_pickle_and_torch_save_indexes_read(tmp_path):
    entries = [("x/0.png", 0), ("y/0.png", 1)]
    torch.save(entries, tmp_path / "a.pickle")
    with open(tmp_path / "b.pickle", "wb") as fh:
        pickle.dump(entries, fh)
    torch.save(entries, tmp_path / "c.pickle", _use_new_zipfile_serialization=False)
    for name in ("a", "b", "c"):
        assert [tuple(e) for e in load_pickle_index(str(tmp_path / f"{name}.pickle"))] == entries
