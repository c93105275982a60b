"""tools/build_index.py: index files of the FaceForensics++ layout."""
import os
import shutil

from dataset.index import load_pickle_index
from helpers import ff_tree
from tools.build_index import main


def test_index_builder_escapes_glob_characters_and_never_empties_an_index(tmp_path):
    root = tmp_path / "a[1]" / "ff"
    counts, _ = ff_tree(root)  # a '[' in the path is a character, not a pattern
    assert counts["train"] == (4, 16)
    good = load_pickle_index(str(root / "train_c23.pickle"))
    for sub in ("original_sequences", "manipulated_sequences"):
        shutil.rmtree(root / sub)  # the crops are gone (moved, unmounted, ...)
    assert main(["faceforensics", "--root", str(root), "--compression", "c23"]) == 2
    assert load_pickle_index(str(root / "train_c23.pickle")) == good
    assert not [f for f in os.listdir(root) if f.endswith(".tmp")]
