import math
import os
import re
import signal
import subprocess
import sys

import pytest
import torch
import yaml

from errors import UserError
from helpers import ROOT, image_list_tree, intact, sentinels, write_config
from trainer.checkpoint import load_checkpoint
from trainer.config import load_config
from trainer.train import NonFiniteLoss, Trainer, run

SIZE = 64


def _config(tmp_path, demo_root, steps=4, val_steps=2, batch=4, extra=None, run_id="t"):
    tf = [{"name": "Resize", "params": {"height": SIZE, "width": SIZE}},
          {"name": "HorizontalFlip", "params": {"p": 0.5}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ff = os.path.join(demo_root, "faceforensics")
    ds = {"train_cfg": {"root": ff, "split": "train", "method": "all", "compression": "c23",
                        "log_steps": 1, "val_steps": val_steps, "num_steps": steps,
                        "transforms": tf},
          # one method against as many real videos: a quick validation
          "val_cfg": {"root": ff, "split": "val", "method": "Deepfakes",
                      "transforms": tf[:1] + tf[2:]}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    cfg = {"model": {"name": "Recce", "pretrained": False},
           "config": {"id": run_id, "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                      **(extra or {})},
           "data": {"name": "FaceForensics", "file": str(tmp_path / "ds.yml"),
                    "train_batch_size": batch, "val_batch_size": 32, "val_branch": "val_cfg",
                    "num_workers": 0}}
    (tmp_path / "cfg.yml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "cfg.yml")


@pytest.mark.slow
def test_short_training_writes_checkpoints_logs_and_events(tmp_path, demo_root):
    path = _config(tmp_path, demo_root, steps=4, val_steps=2)
    result = run(load_config(path))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    files = set(os.listdir(run_dir))
    assert {"latest_model.bin", "config.yml", "dataset.yml", "train_rank0.log"} <= files
    assert any(f.startswith("events.out.tfevents") for f in files)
    assert result["best_checkpoint"] and os.path.isfile(result["best_checkpoint"])
    state = torch.load(run_dir / "latest_model.bin", weights_only=True)  # plain values only
    assert state["step"] == 4 and set(state) >= {"step", "best_step", "best_metric", "eval_metric",
                                                 "model", "optimizer", "scheduler"}
    assert not any(k.startswith("module.") for k in state["model"])
    assert [h[0] for h in result["history"]] == [2, 4]
    # TensorBoard: the original's tags and the new ones (EER, AP, video and per-method AUC, PR and
    # ROC curves, labelled real and fake examples with reconstructions, images/s)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "tensors": 0}).Reload()
    scalars, images = set(events.Tags()["scalars"]), set(events.Tags()["images"])
    assert {"val/Loss", "val/Acc", "val/AUC", "train/Loss", "train/images_per_s"} <= scalars
    assert {"val/EER", "val/AP", "val/video_AUC", "val/Deepfakes_AUC"} <= scalars
    assert {"val/ROC", "val/examples"} <= images and "val/PR" in events.Tags()["tensors"]
    with pytest.raises(UserError, match="already holds a run"):
        run(load_config(path))
    # the saved config is fed back as is, and test.py finds the run's newest best checkpoint
    from trainer.evaluation_report import resolve_checkpoint
    again = load_config(str(run_dir / "config.yml"))
    assert again["dataset"]["train_cfg"]["num_steps"] == 4
    assert resolve_checkpoint(again) == result["best_checkpoint"]
    # the best checkpoint is calibrated on the validation frames that chose it, where a fit of
    # them means something (model.calibration.fit decides); else it is left uncalibrated, and
    # train.py's closing line says why
    best = torch.load(result["best_checkpoint"], weights_only=True)
    from model.calibration import fit, fit_temperature
    from model.checkpoint import load_detector
    from train import summary_lines
    from trainer.evaluation_report import score_split, test_branch
    det = load_detector(result["best_checkpoint"], "cpu")
    _, res = score_split(again, det, torch.device("cpu"), test_branch(again, det.spec, "val_cfg"))
    try:
        fit(res["label"], res["logit"])
    except UserError as exc:  # 4 steps from scratch: scores that may tell the classes apart
        assert "calibration" not in best and det.calibration is None
        assert result["calibration"] is None

        def shape(text):
            return re.sub(r"[-\d.]+", "#", text)
        assert shape(summary_lines(result).splitlines()[-1]) == shape(f"not calibrated: {exc}")
        return
    assert det.calibration.to_dict() == best["calibration"]
    assert det.calibration.fitted_on["branch"] == "val_cfg"
    assert det.calibration.fitted_on["step"] == result["best_step"]
    assert det.calibration.fitted_on["frames"] == len(res["label"])
    assert fit_temperature(res["label"], res["logit"]) == pytest.approx(
        det.calibration.temperature, rel=1e-4)
    assert result["calibration"] == det.calibration.describe()
    assert summary_lines(result).splitlines()[-1] == f"calibrated: {det.calibration.describe()}"


def test_timestamp_run_id_is_saved(tmp_path):
    from trainer.checkpoint import make_run_dir
    cfg = {"config": {"id": None, "ckpt_fold": str(tmp_path)}, "model": {"name": "Recce"}}
    run_dir, lock = make_run_dir(cfg, resume=False)
    assert cfg["config"]["id"] and run_dir == str(tmp_path / "Recce" / cfg["config"]["id"])
    lock.release()


def _params(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, demo_root):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = Trainer(load_config(_config(tmp_path / "a", demo_root, steps=4, val_steps=2)))
    whole.fit()
    whole.close()
    first = Trainer(load_config(_config(tmp_path / "b", demo_root, steps=2, val_steps=2)))
    first.fit()
    first.close()
    second = Trainer(load_config(_config(tmp_path / "b", demo_root, steps=4, val_steps=2,
                                         extra={"resume": True})))
    assert second.step == 2
    second.fit()
    a, b = _params(whole.model), _params(second.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_original_weights_only_checkpoint_starts_fine_tuning(tmp_path, demo_root):
    from model import Recce
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    torch.manual_seed(0)
    original = Recce()
    torch.save({"model": original.state_dict()}, run_dir / "latest_model.bin")
    trainer = Trainer(load_config(_config(tmp_path, demo_root, extra={"resume": True})))
    assert trainer.step == 0
    assert torch.equal(trainer.model.fc.weight, original.fc.weight)


@pytest.mark.slow
def test_non_finite_loss_stops_and_names_the_step(tmp_path, demo_root):
    from helpers import NanAt
    trainer = Trainer(load_config(_config(tmp_path, demo_root, steps=4, val_steps=2)))
    trainer.add_hook(NanAt(3))
    with pytest.raises(NonFiniteLoss, match="step 3"):
        trainer.fit()
    state = load_checkpoint(str(tmp_path / "runs" / "Recce" / "t" / "latest_model.bin"))
    assert state["step"] == 2  # the step-2 checkpoint is intact


def test_untrusted_checkpoint_needs_trust(tmp_path):
    import numpy as np
    path = tmp_path / "old.bin"
    torch.save({"model": {}, "best_metric": np.float64(0.5)}, path)
    with pytest.raises(UserError, match="If you trust its source, allow it with the trust option"):
        load_checkpoint(str(path))
    assert load_checkpoint(str(path), trusted=True)["best_metric"] == 0.5


def test_train_py_prints_one_line_for_user_errors(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("model: {name: Recce}\n")
    proc = subprocess.run([sys.executable, "train.py", "--config", str(bad)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: missing config key: data.name"


def _torchrun(tmp_path, cfg_path, port, env=None, opts=()):
    """tests/ddp_worker.py on 2 ranks: (the process, each rank's dump); with a list of configs,
    run one after the other by the same ranks, a list of those pairs."""
    from helpers import torchrun
    out = tmp_path / "dump"
    several = isinstance(cfg_path, list)
    proc = torchrun(2, port, [os.path.join(ROOT, "tests", "ddp_worker.py"),
                              os.pathsep.join(cfg_path) if several else cfg_path, *opts],
                    env={"RECCE_TEST_DUMP": str(out), **(env or {})})
    assert proc.returncode == 0, proc.stderr[-3000:]
    if several:
        return proc, [[torch.load(f"{out}{i}-{r}.pt", weights_only=True) for r in (0, 1)]
                      for i in range(len(cfg_path))]
    return proc, [torch.load(f"{out}{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_two_process_torchrun_ends_with_identical_parameters(tmp_path, demo_root):
    """Half the files unreadable, batch 1 per process: every step is taken by both ranks or by
    neither; validation scores are gathered with each sample once (padding repeats dropped)."""
    from helpers import image_list_tree, write_config
    data = image_list_tree(demo_root, tmp_path / "d", videos=2, frames=2, corrupt=4)
    val = image_list_tree(demo_root, tmp_path / "v", videos=2, frames=2)
    v1 = os.path.join(val, "fake", "v1")
    os.remove(os.path.join(v1, sorted(os.listdir(v1))[0]))
    path = write_config(tmp_path, data, val, steps=3, val_steps=3, batch=1)
    proc, (d0, d1) = _torchrun(tmp_path, path, 29517)
    assert d0["outcome"] == d1["outcome"] == "finished" and d0["step"] == d1["step"] == 3
    p0, p1 = d0["params"], d1["params"]
    assert p0.keys() == p1.keys()
    assert all(torch.equal(p0[k], p1[k]) for k in p0)  # parameters, not BN running statistics
    assert "gloo" in proc.stdout + proc.stderr
    assert d0["val_size"] == 7  # odd: DistributedSampler pads one repeat
    for d in (d0, d1):
        assert d["val_index"].tolist() == list(range(7))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="torchrun with gloo on Linux")
def test_non_finite_loss_on_one_rank_only(tmp_path, demo_root):
    """on_nonfinite stop, then skip, run one after the other by the same two ranks."""
    from helpers import image_list_tree, write_config
    data = image_list_tree(demo_root, tmp_path / "d", videos=2, frames=2)
    paths = []
    for mode in ("stop", "skip"):
        (tmp_path / mode).mkdir()
        paths.append(write_config(tmp_path / mode, data, steps=3, val_steps=3, batch=1,
                                  extra={"on_nonfinite": mode}))
    _, [(s0, s1), (d0, d1)] = _torchrun(tmp_path, paths, 29518, env={"RECCE_TEST_NAN": "1:2"})
    assert s0["outcome"] == s1["outcome"] == "stopped" and s0["step"] == s1["step"] == 1
    assert d0["outcome"] == d1["outcome"] == "finished" and d0["step"] == d1["step"] == 3
    assert all(torch.equal(d0["params"][k], d1["params"][k]) for k in d0["params"])


def test_newest_best_is_by_step_number(tmp_path):
    from trainer.checkpoint import newest_best
    assert newest_best(str(tmp_path)) is None
    for step in (2, 10, 9):
        (tmp_path / f"best_model_{step}.bin").write_bytes(b"")
    (tmp_path / "best_model_x.bin").write_bytes(b"")
    assert newest_best(str(tmp_path)) == str(tmp_path / "best_model_10.bin")


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
@pytest.mark.slow
def test_on_nonfinite_skip_skips_the_step_and_goes_on(tmp_path, demo_root):
    from helpers import image_list_tree, write_config
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=3,
                        val_steps=3, extra={"on_nonfinite": "skip"})
    from helpers import NanAt, Record
    trainer = Trainer(load_config(path))
    record = Record()
    trainer.add_hook(NanAt(2))
    trainer.add_hook(record)
    trainer.fit()
    trainer.close()
    adam = next(iter(trainer.optimizer.state.values()))
    assert trainer.step == 3 and int(adam["step"]) == 2  # step 2 counted, not applied
    assert len(record.losses) == 2 and all(math.isfinite(v) for v in record.losses)


@pytest.mark.slow
def test_resume_best_continues_from_the_newest_best(tmp_path, demo_root):
    from helpers import image_list_tree, write_config
    data = image_list_tree(demo_root, tmp_path / "d")
    first = Trainer(load_config(write_config(tmp_path, data, steps=2, val_steps=1)))
    first.fit()
    first.close()
    run_dir = tmp_path / "runs" / "Recce" / "t"
    best = max(int(f[len("best_model_"):-4]) for f in os.listdir(run_dir) if f.startswith("best_"))
    torch.save({**torch.load(run_dir / "latest_model.bin", weights_only=True), "step": 99},
               run_dir / "latest_model.bin")  # latest would say 99
    best_state = torch.load(run_dir / f"best_model_{best}.bin", weights_only=True)
    latest_state = torch.load(run_dir / "latest_model.bin", weights_only=True)
    assert "optimizer" not in best_state and "optimizer" in latest_state  # weights and config
    assert {"model", "config", "input_spec", "step"} <= set(best_state)
    assert os.path.getsize(run_dir / f"best_model_{best}.bin") < \
        0.5 * os.path.getsize(run_dir / "latest_model.bin")
    again = Trainer(load_config(write_config(tmp_path, data, steps=4, val_steps=1,
                                             extra={"resume_best": True})))
    assert again.step == best and again.scheduler.iteration == best
    again.close()


@pytest.mark.slow
def test_torchrun_restart_resumes_by_itself(tmp_path, demo_root, monkeypatch):
    from helpers import image_list_tree, write_config
    data = image_list_tree(demo_root, tmp_path / "d")
    first = Trainer(load_config(write_config(tmp_path, data, steps=2, val_steps=2)))
    first.fit()
    first.close()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    again = Trainer(load_config(write_config(tmp_path, data, steps=4, val_steps=2)))
    assert again.step == 2  # no config.resume: the restarted group resumes by itself
    again.close()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(UserError, match="already holds a run"):
        Trainer(load_config(write_config(tmp_path, data, steps=4, val_steps=2)))


@pytest.mark.slow
def test_plateau_scheduler_steps_at_validation_in_training(tmp_path, demo_root):
    from helpers import image_list_tree, write_config
    sched = {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.5, "threshold": 100.0,
             "threshold_mode": "abs"}  # nothing counts as an improvement after the first
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=3,
                        val_steps=1, extra={"scheduler": sched,
                                            "optimizer": {"name": "adam", "lr": 0.001}})
    from helpers import Record
    trainer = Trainer(load_config(path))
    record = Record()
    trainer.add_hook(record)
    trainer.fit()
    trainer.close()
    assert record.lrs == pytest.approx([0.001, 0.0005, 0.00025])


@pytest.mark.slow
def test_demo_true_builds_the_demo_data_when_missing(tmp_path):
    from dataset import build_dataset
    root = tmp_path / "demo" / "faceforensics"
    ds = build_dataset("FaceForensics", {"root": str(root), "demo": True, "split": "val",
                                         "transforms": []})
    assert len(ds) == 384 and (tmp_path / "demo" / ".complete").is_file()
    assert (tmp_path / "demo" / "celeb_df" / "List_of_testing_videos.txt").is_file()


@pytest.mark.slow
def test_config_demo_yml_is_consistent_and_trains(tmp_path, demo_root):
    cfg = load_config(os.path.join(ROOT, "config", "demo.yml"))
    train_cfg = cfg["dataset"]["train_cfg"]
    assert cfg["model"]["pretrained"] is False  # no download
    assert cfg["config"]["scheduler"]["T_max"] == train_cfg["num_steps"]
    assert all(b["demo"] and b["root"] == "./data/demo/faceforensics"
               for b in cfg["dataset"].values())
    ff = os.path.join(demo_root, "faceforensics")
    cfg = load_config(os.path.join(ROOT, "config", "demo.yml"),
                      ["config.id=demo", f"config.ckpt_fold={tmp_path}", "data.num_workers=0",
                       "data.train_batch_size=4"],
                      ["train_cfg.num_steps=1", "train_cfg.val_steps=1", f"train_cfg.root={ff}",
                       f"val_cfg.root={ff}"])
    result = run(cfg)
    assert result["history"][0][0] == 1 and os.path.isfile(result["best_checkpoint"])


@pytest.mark.slow
def test_xception_baseline_trains_with_its_own_loss_and_terms(tmp_path, demo_root):
    from helpers import image_list_tree, write_config
    from loss import ClassificationLoss
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=2,
                        val_steps=2, model={"name": "Xception"})
    trainer = Trainer(load_config(path))
    assert isinstance(trainer.criterion, ClassificationLoss)
    trainer.fit()
    trainer.close()
    state = torch.load(tmp_path / "runs" / "Xception" / "t" / "latest_model.bin", weights_only=True)
    assert state["config"]["model"]["name"] == "Xception"
    log = (tmp_path / "runs" / "Xception" / "t" / "train_rank0.log").read_text()
    assert "loss " in log and "cls " in log and "recons" not in log


@pytest.mark.slow
def test_config_compile_wraps_the_model_for_training(tmp_path, demo_root, monkeypatch):
    """The code path only (compiling RECCE on a 2-core CPU takes minutes): config.compile hands
    the (DDP-wrapped) model to torch.compile and trains through what it returns."""
    from helpers import image_list_tree, write_config
    compiled = []

    def fake_compile(module):
        compiled.append(module)
        return module
    monkeypatch.setattr(torch, "compile", fake_compile)
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=1,
                        val_steps=1, extra={"compile": True})
    trainer = Trainer(load_config(path))
    assert compiled == [trainer.ddp] and trainer.forward is trainer.ddp
    trainer.fit()
    trainer.close()
    assert trainer.step == 1
    plain = Trainer(load_config(path, ["config.id=plain", "config.compile=false"]))
    assert len(compiled) == 1
    plain.close()


def test_progress_gives_images_per_second_eta_and_a_line_every_30_s():
    from trainer.logs import Progress
    now = [100.0]
    p = Progress(step=10, num_steps=110, images_per_step=32, every=30.0, clock=lambda: now[0])
    now[0] += 20.0  # 50 steps of 32 images in 20 s
    rate, left = p.rate(60)
    assert rate == pytest.approx(80.0) and left == pytest.approx(20.0)  # 50 steps left, 0.4 s each
    assert Progress.eta(3725) == "1:02:05"
    assert not p.due()
    now[0] += 29.0
    assert not p.due()
    now[0] += 1.5
    assert p.due()


@pytest.mark.slow
def test_log_lines_name_the_pace(tmp_path, demo_root):
    from helpers import image_list_tree, write_config
    from trainer.train import run
    cfg = load_config(write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=2,
                                   val_steps=2))
    result = run(cfg)
    text = open(os.path.join(result["run_dir"], "train_rank0.log")).read()
    assert re.search(r"step 2/2  loss .* img/s  eta 0:00:00", text)


def test_evaluation_says_how_far_it_is_without_a_terminal(demo_root, monkeypatch, caplog):
    import logging

    from torch.utils.data import DataLoader

    import trainer.evaluate as ev
    from dataset import build_dataset, collate
    from model import build_detector
    ds = build_dataset("FaceForensics", {"root": os.path.join(demo_root, "faceforensics"),
                                         "split": "val", "transforms": [
                                             {"name": "Resize", "params": {"height": 32,
                                                                           "width": 32}}]})
    ds.items = ds.items[:6]
    monkeypatch.setattr(ev, "PROGRESS_EVERY", 0.0)
    with caplog.at_level(logging.INFO, logger="recce"):
        ev.evaluate(build_detector({"name": "Xception", "pretrained": False}),
                    DataLoader(ds, batch_size=2, collate_fn=collate), torch.device("cpu"))
    assert "evaluating: 3 of 3 batches" in caplog.text


@pytest.mark.slow
def test_a_saved_run_works_from_any_working_directory(tmp_path, demo_root, monkeypatch):
    """Relative roots and ckpt_fold are stored absolute: test.py from another folder finds the
    checkpoint and the data (and builds no demo data there)."""
    from helpers import image_list_tree, write_config
    from trainer.evaluation_report import run_test
    from trainer.train import run
    work = tmp_path / "work"
    work.mkdir()
    image_list_tree(demo_root, work / "d")
    monkeypatch.chdir(work)
    cfg = load_config(write_config(work, "d", steps=1, val_steps=1))
    cfg["config"]["ckpt_fold"] = "runs"  # relative, as the demo's
    result = run(cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    saved = load_config(str(work / result["run_dir"] / "config.yml"),
                        ["data.test_branch=val_cfg"])
    assert os.path.isabs(saved["config"]["ckpt_fold"])
    assert os.path.isabs(saved["dataset"]["train_cfg"]["root"])
    metrics, path, out_dir, n, _ = run_test(saved, device="cpu", out_dir=str(tmp_path / "t"))
    assert n > 0 and os.path.isfile(path)
    assert os.listdir(elsewhere) == []  # nothing made in the other folder


def test_stale_temporaries_removed_user_files_kept(tmp_path, demo_root):
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    stale = (".latest_model.bin.k3x_9q2a.tmp", ".best_model_5.bin.0a1b2c3d.tmp")
    for name in stale:  # fileio.temporary_beside's names, left by a killed atomic_save
        (run_dir / name).write_bytes(b"x" * 100)
    user = sentinels(run_dir / "notes.tmp1", run_dir / ".latest_model.bin.tmpfoo",
                      run_dir / "latest_model.bin.k3x_9q2a.tmp",  # not hidden: not our name
                      run_dir / ".latest_model.bin.k3x_9q2.tmp",  # 7 characters
                      run_dir / ".best_model_5.bin.0A1B2C3D.tmp",  # mkstemp writes lower case
                      run_dir / ".config.yml.0a1b2c3d.tmp")  # not a checkpoint's
    trainer = Trainer(load_config(path))
    trainer.close()
    names = set(os.listdir(run_dir))
    assert not names & set(stale)
    assert intact(user)


@pytest.mark.slow
def test_same_run_twice_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, demo_root):
    from trainer.checkpoint import RunLock
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"))
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]);"
        "from trainer.checkpoint import RunLock; lock = RunLock(sys.argv[2]);"
        "print('locked', flush=True);"
        "time.sleep(60)"), str(ROOT), str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match="is in use by another run"):
            Trainer(load_config(path))
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    RunLock(str(run_dir)).release()  # the kernel released the killed run's lock
    trainer = Trainer(load_config(path))
    trainer.close()


def test_failed_resume_changes_nothing(tmp_path, demo_root):
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"),
                        extra={"resume": True})
    run_dir = tmp_path / "runs" / "Recce" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "latest_model.bin").write_bytes(b"not a checkpoint")
    (run_dir / "config.yml").write_text("the run's own config")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        Trainer(load_config(path))
    assert (run_dir / "config.yml").read_text() == "the run's own config"
    assert not [f for f in os.listdir(run_dir) if f.startswith("events")]
    from trainer.checkpoint import RunLock
    RunLock(str(run_dir)).release()  # the run that could not start released its lock


def test_all_unreadable_training_set_stops_with_one_line(tmp_path, demo_root):
    from trainer.train import Trainer
    data = image_list_tree(demo_root, tmp_path / "d", videos=0, corrupt=3)
    trainer = Trainer(load_config(write_config(tmp_path, data, steps=5)))
    with pytest.raises(UserError, match=r"ImageList .*whole epoch without a readable image "
                                         r"\(6 bad file"):
        trainer.fit()
    trainer.close()


def test_consecutive_bad_batches_are_bounded(tmp_path, demo_root, monkeypatch):
    import trainer.train as tt
    monkeypatch.setattr(tt, "MAX_SKIPPED_BATCHES", 3)
    data = image_list_tree(demo_root, tmp_path / "d", videos=0, corrupt=20)
    trainer = tt.Trainer(load_config(write_config(tmp_path, data, steps=5)))
    with pytest.raises(UserError, match="3 batches in a row without a readable image"):
        trainer.fit()
    trainer.close()


def test_best_checkpoint_ties_and_lower_is_better():
    from trainer.checkpoint_hooks import BestCheckpoint
    best = BestCheckpoint("AUC")
    best.best_metric = 0.8
    assert best.is_better(0.8) and not best.is_better(0.79)
    assert not best.is_better(float("nan"))
    best = BestCheckpoint("LogLoss")
    best.best_metric = 0.3
    assert best.is_better(0.3) and best.is_better(0.2)
    assert not best.is_better(0.31)
    best = BestCheckpoint("Acc")
    assert best.is_better(0.1) and not best.is_better(float("nan"))


@pytest.mark.slow
def test_full_disk_ends_the_run_and_keeps_the_previous_checkpoint(tmp_path, demo_root,
                                                                   monkeypatch):
    import errno

    import trainer.checkpoint as ck
    from trainer.train import Trainer
    path = write_config(tmp_path, image_list_tree(demo_root, tmp_path / "d"), steps=4,
                        val_steps=2)
    trainer = Trainer(load_config(path))
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > 2:  # best and latest at step 2 succeed; the disk is full at step 4
            with open(f, "wb") as fh:
                fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *a, **k)
    monkeypatch.setattr(ck.torch, "save", save)
    with pytest.raises(UserError,
                       match="No space left on device; the previous checkpoint is intact"):
        trainer.fit()
    trainer.close()
    run_dir = tmp_path / "runs" / "Recce" / "t"
    monkeypatch.setattr(ck.torch, "save", real_save)
    assert torch.load(run_dir / "latest_model.bin", weights_only=True)["step"] == 2
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f]


def test_a_normalisation_the_pretrained_weights_do_not_expect_is_one_warning():
    from model import DETECTORS, InputSpec
    from trainer.data import pretrained_spec_warning
    spec = InputSpec((64, 64), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    recce = DETECTORS.get("Recce")
    warning = pretrained_spec_warning(True, recce, spec, "ds.yml")
    assert "ds.yml normalises with mean" in warning and "pretrained Recce weights expect" in warning
    assert pretrained_spec_warning(False, recce, spec, "ds.yml") is None
    assert pretrained_spec_warning(True, recce, recce.default_spec, "ds.yml") is None


def test_workers_persist_across_epochs_and_augment_by_seed_epoch_index(demo_root):
    """The training sampler hands (epoch, index) to the dataset: persistent workers augment epoch
    e exactly as fresh ones (or the main process) would."""
    from dataset import build_dataset
    from trainer.data import build_loader
    branch = {"root": os.path.join(demo_root, "faceforensics"), "split": "val", "transforms": [
        {"name": "Resize", "params": {"height": 24, "width": 24}},
        {"name": "HorizontalFlip", "params": {"p": 0.5}},
        {"name": "RandomBrightnessContrast", "params": {"p": 1.0}}]}
    ds = build_dataset("FaceForensics", branch, seed=5, defer_normalize=True)
    ds.items = ds.items[:12]
    seen = {}
    for workers in (0, 2):
        loader = build_loader(ds, 4, True, workers, 5, 0, 1)
        assert loader.persistent_workers == (workers > 0)
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            for batch in loader:
                for i, img in zip(batch["index"].tolist(), batch["image"]):
                    seen.setdefault((epoch, i), []).append(img)
    assert len(seen) == 24 and all(len(v) == 2 and torch.equal(*v) for v in seen.values())
    assert any(not torch.equal(seen[(0, i)][0], seen[(1, i)][0]) for i in range(12))
