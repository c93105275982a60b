"""trainer/deepfakebench.py: DeepfakeBench's recipe (its recce.yaml and train.py), its
evaluation moments, the average AUC it chooses a checkpoint by."""
import os

import pytest

from errors import UserError


def test_recipe_is_recce_yaml_s(monkeypatch):
    """--recipe deepfakebench against the values of its recce.yaml (lr 0.0002, betas 0.9 /
    0.999, eps 1e-8, weight_decay 0.0005, lr_scheduler null, train_batchSize 32, resolution 256,
    frame_num 32, manualSeed 1024, use_data_augmentation false, loss_func cross_entropy), its
    train.py (range(start_epoch, nEpochs + 1): 11 passes for nEpochs 10) and its fp32 training."""
    from helpers import ROOT
    from trainer.config import branch, load_config
    from trainer.deepfakebench import TEST_DATASETS, passes
    monkeypatch.chdir(ROOT)
    cfg = load_config(os.path.join(ROOT, "config", "deepfakebench", "deepfakebench_recipe.yml"))
    c, train = cfg["config"], branch(cfg, "train")
    assert c["amp"] == "none"
    assert c["optimizer"] == {"name": "adam", "lr": 0.0002, "betas": [0.9, 0.999], "eps": 1e-8,
                              "weight_decay": 0.0005}
    assert c["scheduler"] is None and c["seed"] == 1024 and cfg["loss"]["kind"] == "cross_entropy"
    assert (cfg["loss"]["lambda_1"], cfg["loss"]["lambda_2"], cfg["loss"]["flood_level"]) == \
        (0, 0, 0)
    # its checkpoint choice: the mean AUC over recce.yaml's test_dataset list, on those branches
    assert c["hooks"] == [{"name": "deepfakebench_selection", "branches": [
        "test_ffpp_c23", "test_ff_f2f", "test_ff_df", "test_ff_fs", "test_ff_nt"]}]
    assert {b["dataset"] for k, b in cfg["dataset"].items() if k in c["hooks"][0]["branches"]} \
        == set(TEST_DATASETS) and train["val_steps"] * 2 == 3600 * 32 // 32  # half a pass
    assert cfg["model"]["num_classes"] == 2 and cfg["model"]["pretrained"] is True
    assert cfg["data"]["train_batch_size"] == 32 and train["frame_num"] == 32
    assert [t["name"] for t in train["transforms"]] == ["Resize", "Normalize"]  # no augmentation
    assert train["transforms"][0]["params"] == {"height": 256, "width": 256, "interpolation": 2}
    assert train["transforms"][1]["params"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    per_pass = 3600 * 32 // 32  # 3,600 training videos x frame_num 32 / batch 32
    assert passes(10, 0) == 11 and train["num_steps"] == 11 * per_pass
    text = open(os.path.join(ROOT, "config", "deepfakebench", "deepfakebench_recipe.yml")).read()
    assert "never read by RecceDetector" in text  # its encoder is timm's, not that file


def test_its_evaluation_moments_average_and_selection():
    from trainer.deepfakebench import (
        TEST_DATASETS,
        BestAverage,
        average_test_auc,
        evaluation_iterations,
        evaluation_steps,
        test_set_auc,
    )
    # 3,600 batches a pass: once at the end of epoch 0, then at 1,800 and 3,600 of each epoch
    steps = evaluation_steps(3600)
    assert len(steps) == 21 and steps[0] == (0, 3599, 3600) and steps[-1] == (10, 3599, 39600)
    assert [s for _, _, s in steps[1:]] == list(range(5400, 39601, 1800))
    # an odd count, by hand: N = 5, test_step 2 after epoch 0; the counter is e * 5 + i
    assert evaluation_iterations(0, 5) == [4]            # (i + 1) % 5 == 0
    assert evaluation_iterations(1, 5) == [0, 2, 4]      # (5 + i + 1) % 2 == 0
    assert evaluation_iterations(2, 5) == [1, 3]         # (10 + i + 1) % 2 == 0
    with pytest.raises(UserError, match="test_step would be 0"):
        evaluation_iterations(1, 1)
    # the average over its test_dataset list, and the first strictly best moment kept
    assert TEST_DATASETS == ("FaceForensics++", "FF-F2F", "FF-DF", "FF-FS", "FF-NT")
    aucs = {"FaceForensics++": 0.9, "FF-F2F": 0.8, "FF-DF": 1.0, "FF-FS": 0.7, "FF-NT": 0.6,
            "Celeb-DF-v2": 0.1}
    assert average_test_auc(aucs) == pytest.approx(4.0 / 5)
    with pytest.raises(UserError, match="no AUC for FF-NT"):
        average_test_auc({k: v for k, v in aucs.items() if k != "FF-NT"})
    best = BestAverage()
    offers = [(0.7, "a"), (0.8, "b"), (0.8, "c"), (float("nan"), "d"), (0.75, "e")]
    assert [best.offer(v, m) for v, m in offers] == [True, True, False, False, False]
    assert best.moment == "b" and best.best == 0.8
    assert test_set_auc([0, 2, 1, 0], [0.1, 0.9, 0.8, 0.2]) == 1.0  # label 2 counts as fake
