"""dataset/celeb_df.py: the Celeb-DF layout, its test list, its balanced training set drawn by
the seed alone."""
import numpy as np
import torch

from dataset import build_dataset
from helpers import NORM, noise_image


def test_sampling_depends_on_seed_only(tmp_path):
    """Celeb-DF's balance draws 4 of 12 fakes: the seed decides which, nothing else does."""
    for v in range(2):
        for f in range(2):
            noise_image(tmp_path / f"Celeb-real/images/r{v}/{f}.png")
    for v in range(4):
        for f in range(3):
            noise_image(tmp_path / f"Celeb-synthesis/images/s{v}/{f}.png")
    (tmp_path / "List_of_testing_videos.txt").write_text("1 Celeb-real/none.mp4\n")
    cfg = {"root": str(tmp_path), "split": "train", "balance": True, "transforms": NORM}
    a = build_dataset("CelebDF", cfg, seed=5).items
    np.random.seed(123)
    import random
    random.seed(7)
    torch.manual_seed(9)
    assert a == build_dataset("CelebDF", cfg, seed=5).items
    assert len(a) == 8 and sum(it.label for it in a) == 4
    others = [build_dataset("CelebDF", cfg, seed=s).items for s in (6, 7, 8)]
    assert any(o != a for o in others)


def test_celeb_df_layout_test_list_and_balance(tmp_path):
    for folder, n in (("YouTube-real", 1), ("Celeb-real", 2), ("Celeb-synthesis", 4)):
        for v in range(n):
            for f in range(2):
                noise_image(tmp_path / folder / "images" / f"id{v}" / f"{f:04d}.png")
    (tmp_path / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id0.mp4\n0 Celeb-synthesis/id0.mp4\n0 Celeb-synthesis/id1.mp4\n")
    test = build_dataset("CelebDF", {"root": str(tmp_path), "split": "test", "transforms": NORM})
    assert sorted(test.labels) == [0, 0, 1, 1, 1, 1]  # labels by folder, not by the list's column
    train = build_dataset("CelebDF", {"root": str(tmp_path), "split": "train", "balance": True,
                                      "transforms": NORM})
    assert sorted(train.labels) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert {it.video for it in test.items} == {"Celeb-real/id0", "Celeb-synthesis/id0",
                                               "Celeb-synthesis/id1"}
