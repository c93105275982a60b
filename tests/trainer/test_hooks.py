"""trainer/hooks.py: the hooks a config turns on (clipping, EMA, gradient accumulation), a user's
own hook, and their state through a resumed run. Trained on a small ImageList tree with the test
plugin's TinyDetector (no batch norm, no dropout: gradient accumulation can then equal one larger
batch)."""
import os

import pytest
import torch
import yaml

from errors import UserError
from helpers import ROOT, Record, image_list_tree, write_config
from model.checkpoint import load_detector
from trainer.config import load_config
from trainer.hooks import HOOKS, Hook, build_hooks
from trainer.train import Trainer

PLUGIN = os.path.join(ROOT, "tests", "plugins", "tiny_detector.py")


def _tiny(tmp_path, demo_root, hooks=(), steps=3, batch=4, val_steps=3, run_id="t", extra=None):
    data = tmp_path / "d"
    if not data.exists():
        image_list_tree(demo_root, data)  # 12 images: 6 real, 6 fake
    return load_config(write_config(
        tmp_path, data, steps=steps, val_steps=val_steps, batch=batch, run_id=run_id,
        model={"name": "TinyDetector"},
        extra={"imports": [PLUGIN], "hooks": list(hooks), "seed": 7,
               "optimizer": {"name": "sgd", "lr": 0.5}, **(extra or {})}))


def _train(cfg, *extra_hooks):
    trainer = Trainer(cfg)
    for hook in extra_hooks:
        trainer.add_hook(hook)
    trainer.fit()
    trainer.close()
    return trainer


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _GradNorm(Hook):
    """The gradients' total norm as the optimizer is about to see it."""

    def __init__(self):
        self.norms = []

    def before_optimizer_step(self, trainer):
        grads = [p.grad.detach().flatten() for p in trainer.params if p.grad is not None]
        self.norms.append(float(torch.cat(grads).norm()))


class _Weights(Hook):
    """The raw weights before training and after every step."""

    def __init__(self):
        self.seen = []

    def before_train(self, trainer):
        self.seen.append(_weights(trainer.model))

    def after_step(self, trainer, losses):
        self.seen.append(_weights(trainer.model))


def test_clip_grad_norm_clips_what_the_optimizer_sees(tmp_path, demo_root):
    probe = _GradNorm()
    trainer = _train(_tiny(tmp_path, demo_root, [{"name": "clip_grad_norm", "max_norm": 1e-3}]),
                     probe)
    clip = trainer.hooks[0]
    assert float(clip.last_norm) > 1e-3  # there was something to clip
    assert len(probe.norms) == 3 and max(probe.norms) <= 1e-3 * (1 + 1e-4)


def test_gradient_accumulation_equals_one_batch_that_many_times_larger(tmp_path, demo_root):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    big = _train(_tiny(tmp_path / "a", demo_root, batch=4))
    record = Record()
    acc = _train(_tiny(tmp_path / "b", demo_root, [{"name": "grad_accumulation", "steps": 2}],
                       batch=2), record)
    # three optimizer steps each: the schedule and the step count count optimizer steps
    assert big.step == acc.step == 3 and acc.scheduler.iteration == big.scheduler.iteration == 3
    assert acc.batch_in_epoch == 6 and big.batch_in_epoch == 3  # micro-batches of batch 2
    a, b = _weights(big.model), _weights(acc.model)
    # float32 sums in another order: equal within 2e-5 (an undivided loss is off by ~1e-2)
    assert all(torch.allclose(a[k], b[k], atol=2e-5, rtol=1e-4) for k in a)
    assert not all(torch.equal(a[k], _weights(_tiny_init(tmp_path))[k]) for k in a)  # it trained
    assert len(record.losses) == 3


def _tiny_init(tmp_path):
    torch.manual_seed(7)
    from model import build_detector
    return build_detector({"name": "TinyDetector", "pretrained": False})


def test_ema_averages_validates_saves_and_is_what_the_loaders_load(tmp_path, demo_root):
    import logging
    seen = _Weights()
    trainer = _train(_tiny(tmp_path, demo_root, [{"name": "ema", "decay": 0.5}], val_steps=3),
                     seen)
    # ema_k = 0.5 ema_(k-1) + 0.5 w_k from the starting weights, after each of the 3 steps
    expected = seen.seen[0]
    for w in seen.seen[1:]:
        expected = {k: 0.5 * expected[k] + 0.5 * w[k] for k in w}
    ema = trainer.hooks[0].model.state_dict()
    assert all(torch.allclose(ema[k], expected[k], atol=1e-7) for k in ema)
    assert not all(torch.equal(ema[k], seen.seen[-1][k]) for k in ema)  # not the raw weights
    run_dir = tmp_path / "runs" / "TinyDetector" / "t"
    log = (run_dir / "train_rank0.log").read_text()
    assert "step 3 validation of the EMA weights (decay 0.5): Loss" in log
    assert "(best EMA AUC" in log
    latest = torch.load(run_dir / "latest_model.bin", weights_only=True)
    best = torch.load(run_dir / "best_model_3.bin", weights_only=True)
    for state in (latest, best):
        assert all(torch.equal(state["ema"][k], ema[k]) for k in ema)
        assert all(torch.equal(state["model"][k], seen.seen[-1][k]) for k in ema)
    assert latest["hooks"][0][0] == "ema" and latest["hooks"][0][1]["updates"] == 3
    # the best checkpoint is calibrated on the scores of the weights that chose it: the EMA's
    from model.calibration import fit_temperature
    assert best["calibration"]["fitted_on"]["weights"] == "EMA"
    labels, logits = trainer.evaluate_model(trainer.hooks[0].model)["scores"]
    assert best["calibration"]["temperature"] == pytest.approx(fit_temperature(labels, logits),
                                                               rel=1e-6)
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logger = logging.getLogger("recce")
    logger.addHandler(handler)
    try:
        loaded = load_detector(str(run_dir / "best_model_3.bin"))
    finally:
        logger.removeHandler(handler)
    assert "best_model_3.bin: its EMA weights (the training run's ema hook)" in said
    assert all(torch.equal(loaded.state_dict()[k], ema[k]) for k in ema)


def test_a_resumed_run_with_hooks_is_bit_exact(tmp_path, demo_root):
    hooks = [{"name": "ema", "decay": 0.9}, {"name": "clip_grad_norm", "max_norm": 0.5},
             {"name": "grad_accumulation", "steps": 2}]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    whole = _train(_tiny(tmp_path / "a", demo_root, hooks, steps=4, batch=2, val_steps=2))
    _train(_tiny(tmp_path / "b", demo_root, hooks, steps=2, batch=2, val_steps=2))
    second = _train(_tiny(tmp_path / "b", demo_root, hooks, steps=4, batch=2, val_steps=2,
                          extra={"resume": True}))
    assert second.step == 4
    for a, b in ((whole.model, second.model), (whole.hooks[0].model, second.hooks[0].model)):
        wa, wb = _weights(a), _weights(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert second.hooks[0].updates == whole.hooks[0].updates == 4


class _Moments(Hook):
    """What the checkpoint moments show a hook: at ``write_checkpoints``, whether the validation's
    log line is written and latest_model.bin there yet (the checkpoint hooks come after this
    one); at ``after_load_checkpoint``, the resumed state's step and best step."""

    def __init__(self):
        self.seen = []

    def write_checkpoints(self, trainer):
        log = os.path.join(trainer.run_dir, "train_rank0.log")
        self.seen.append(("write", trainer.step,
                          f"step {trainer.step} validation: Loss" in open(log).read(),
                          os.path.isfile(os.path.join(trainer.run_dir, "latest_model.bin"))))

    def after_load_checkpoint(self, trainer, state):
        self.seen.append(("load", state["step"], state["best_step"]))


def test_the_checkpoints_are_hooks_called_after_the_runs_own(tmp_path, demo_root):
    first = _Moments()
    trainer = _train(_tiny(tmp_path, demo_root, steps=4, val_steps=2), first)
    assert first.seen == [("write", 2, True, False), ("write", 4, True, True)]
    assert [type(h).__name__ for h in trainer.default_hooks] == ["BestCheckpoint",
                                                                  "LatestCheckpoint"]
    assert trainer.hooks == [first]  # the run's own hooks only
    run_dir = tmp_path / "runs" / "TinyDetector" / "t"
    latest = torch.load(run_dir / "latest_model.bin", weights_only=True)
    assert (latest["best_step"], latest["eval_metric"]) == (trainer.best.best_step, "AUC")
    assert latest["best_metric"] == trainer.best.best_metric
    HOOKS.register(_Moments, name="t_moments")  # from the config: there when the state loads
    try:
        again = Trainer(_tiny(tmp_path, demo_root, [{"name": "t_moments"}], steps=6,
                              val_steps=2, extra={"resume": True}))
    finally:
        HOOKS.pop("t_moments")
    try:
        assert again.hooks[0].seen == [("load", 4, trainer.best.best_step)]
        assert (again.best.best_step, again.best.best_metric) == (trainer.best.best_step,
                                                                  trainer.best.best_metric)
    finally:
        again.close()


def test_hooks_are_checked_when_the_config_is_loaded(tmp_path, demo_root):
    with pytest.raises(UserError, match=r"config.hooks: unknown hook 'clip' \(known: .*"
                                        r"clip_grad_norm"):
        _tiny(tmp_path, demo_root, [{"name": "clip"}])
    with pytest.raises(UserError, match=r"config.hooks\[0\].max_norm: expected a positive finite "
                                        r"number, got -1 \(the hook clip_grad_norm's argument\)"):
        _tiny(tmp_path, demo_root, [{"name": "clip_grad_norm", "max_norm": -1}])
    with pytest.raises(UserError, match=r"config.hooks\[0\]: the hook clip_grad_norm needs "
                                        r"max_norm"):
        _tiny(tmp_path, demo_root, [{"name": "clip_grad_norm"}])
    with pytest.raises(UserError, match=r"config.hooks\[0\].step: the hook grad_accumulation "
                                        r"takes no argument 'step' \(it takes: steps\)"):
        build_hooks([{"name": "grad_accumulation", "step": 2}])
    with pytest.raises(UserError, match=r"^config.hooks\[0\] and config.hooks\[1\] are both the "
                                        r"hook grad_accumulation, which a run may have once"):
        build_hooks([{"name": "grad_accumulation", "steps": 2}] * 2)
    with pytest.raises(UserError, match=r"ema: decay 0 must lie between 0 and 1"):
        build_hooks([{"name": "ema", "decay": 0}])


def test_every_shipped_hook_declares_whether_a_run_may_have_it_twice():
    from trainer import hooks
    shipped = [cls for cls in HOOKS.values() if cls.__module__ == hooks.__name__]
    assert len(shipped) >= 4
    for cls in shipped:
        assert isinstance(vars(cls).get("once"), bool), cls.__name__


def test_a_hook_owning_a_checkpoint_entry_or_shared_state_is_refused_twice(tmp_path, demo_root):
    """Two ``ema`` (the checkpoint's ema entry) are one config error, when the config is loaded,
    naming both entries; so are two of DeepfakeBench's choice. Two clip_grad_norm are a run."""
    with pytest.raises(UserError) as info:
        _tiny(tmp_path, demo_root, [{"name": "clip_grad_norm", "max_norm": 1.0},
                                    {"name": "ema", "decay": 0.9},
                                    {"name": "ema", "decay": 0.999}])
    assert str(info.value) == (
        "config.hooks[1] and config.hooks[2] are both the hook ema, which a run may have once "
        "(it owns a checkpoint entry or state the loop shares): keep one")
    with pytest.raises(UserError, match=r"^config.hooks\[0\] and config.hooks\[1\] are both the "
                                        r"hook deepfakebench_selection"):
        build_hooks([{"name": "deepfakebench_selection", "branches": ["a"]}] * 2)
    clips = build_hooks([{"name": "clip_grad_norm", "max_norm": 1.0},
                         {"name": "clip_grad_norm", "max_norm": 5.0}])
    assert [h.max_norm for h in clips] == [1.0, 5.0]
    # the same rule for a hook added in code
    trainer = Trainer(_tiny(tmp_path, demo_root, [{"name": "ema"}], run_id="added"))
    try:
        with pytest.raises(UserError, match=r"^config.hooks\[0\] and add_hook\(EMA\) are both "
                                            r"the hook ema"):
            trainer.add_hook(HOOKS.get("ema")(decay=0.5))
        assert len(trainer.hooks) == 1
    finally:
        trainer.close()


def test_a_users_hook_that_leaves_once_undeclared(tmp_path):
    """A hook that writes checkpoint entries is taken to be once-only; one that only watches may
    appear twice; one that declares ``once`` is taken at its word. Two different hooks that both
    accumulate gradients are still refused."""

    class Saves(Hook):
        def at_checkpoint(self, trainer, state):
            state["mine"] = 1

    class Watches(Hook):
        def after_step(self, trainer, losses):
            pass

    class SavesTwice(Saves):
        once = False

    class Accumulates(Hook):
        once = False
        accumulate = 2

    names = {"t_saves": Saves, "t_watches": Watches, "t_saves_twice": SavesTwice,
             "t_accumulates": Accumulates}
    for name, cls in names.items():
        HOOKS.register(cls, name=name)
    try:
        with pytest.raises(UserError, match=r"^config.hooks\[0\] and config.hooks\[1\] are "
                                            r"both the hook t_saves, which a run may have once"):
            build_hooks([{"name": "t_saves"}] * 2)
        assert len(build_hooks([{"name": "t_watches"}] * 2)) == 2
        assert len(build_hooks([{"name": "t_saves_twice"}] * 2)) == 2
        with pytest.raises(UserError, match="more than one hook accumulates"):
            build_hooks([{"name": "t_accumulates"}, {"name": "grad_accumulation", "steps": 2}])
    finally:
        for name in names:
            HOOKS.pop(name)


def test_a_users_hook_is_registered_from_its_own_file(tmp_path, demo_root):
    (tmp_path / "my_hook.py").write_text(
        "from trainer.hooks import Hook, register_hook\n\n\n"
        "@register_hook(name='count_steps')\n"
        "class CountSteps(Hook):\n"
        "    def __init__(self, every: int = 1):\n"
        "        self.count = 0\n\n"
        "    def after_step(self, trainer, losses):\n"
        "        self.count += 1\n")
    cfg = _tiny(tmp_path, demo_root, [{"name": "count_steps", "every": 2}],
                extra={"imports": [PLUGIN, str(tmp_path / "my_hook.py")]})
    trainer = _train(cfg)
    assert trainer.hooks[0].count == 3
    HOOKS.pop("count_steps")
    saved = yaml.safe_load((tmp_path / "runs" / "TinyDetector" / "t" / "config.yml").read_text())
    assert saved["config"]["hooks"] == [{"name": "count_steps", "every": 2}]


@pytest.mark.slow
def test_deepfakebench_selection_chooses_on_its_test_sets_at_its_moments(deepfakebench_json,
                                                                         tmp_path):
    """The hook of --recipe deepfakebench: 8 training frames in batches of 2 are 4 batches a
    pass; over 2 passes DeepfakeBench evaluates after steps 4 (end of the first pass), 6 and 8
    (middle and end of the second): validations at those steps choose by the mean test AUC, the
    one at step 2 chooses nothing, and a mean that is not strictly higher keeps the earlier."""
    import re
    cfg, _ = deepfakebench_json
    tf = [{"name": "Resize", "params": {"height": 64, "width": 64}},
          {"name": "Normalize", "params": {"mean": [0.5] * 3, "std": [0.5] * 3}}]
    ds = {"train_cfg": {**cfg, "dataset": "FaceForensics++", "split": "train", "frame_num": 2,
                        "num_steps": 8, "log_steps": 2, "val_steps": 2, "transforms": tf},
          "val_cfg": {**cfg, "dataset": "FaceForensics++", "split": "test", "frame_num": 1,
                      "transforms": tf},
          "t_ff": {**cfg, "dataset": "FaceForensics++", "split": "test", "frame_num": 2,
                   "transforms": tf},
          "t_cdf": {**cfg, "dataset": "Celeb-DF-v2", "split": "test", "frame_num": 2,
                    "transforms": tf}}
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    hook = {"name": "deepfakebench_selection", "branches": ["t_ff", "t_cdf"]}
    (tmp_path / "c.yml").write_text(yaml.safe_dump({
        "model": {"name": "Recce", "pretrained": False},
        "config": {"id": "dfb", "ckpt_fold": str(tmp_path / "runs"), "metric": "AUC",
                   "hooks": [hook], "keep_best": None},
        "data": {"name": "DeepfakeBench", "file": str(tmp_path / "ds.yml"), "num_workers": 0,
                 "train_batch_size": 2, "val_branch": "val_cfg", "test_branch": "t_cdf"}}))
    trainer = Trainer(load_config(str(tmp_path / "c.yml")))
    assert len(trainer.train_loader) == 4
    trainer.fit()
    trainer.close()
    choice = trainer.hooks[0]
    assert choice.moments == {4, 6, 8}
    log = (tmp_path / "runs" / "Recce" / "dfb" / "train_rank0.log").read_text()
    assert "checkpoint choice: DeepfakeBench's, on test data: the mean frame AUC over t_ff, t_cdf" \
        in log and "8 steps = 2.00 passes of 4 batches, fp32" in log
    means = {int(m.group(1)): float(m.group(2)) for m in re.finditer(
        r"step (\d+) test AUC \(DeepfakeBench's choice, on test data\): .* mean ([0-9.]+)", log)}
    assert set(means) == {4, 6, 8}
    kept, best = [], -1.0
    for step in (4, 6, 8):  # by hand: the first strictly higher mean
        if means[step] > best:
            best = means[step]
            kept.append(step)
    saved = sorted(int(f[len("best_model_"):-4]) for f in os.listdir(
        tmp_path / "runs" / "Recce" / "dfb") if f.startswith("best_model_"))
    assert saved == kept and trainer.best.best_step == kept[-1] == choice.best.moment
    assert trainer.best.best_metric == pytest.approx(means[kept[-1]], abs=1e-4)
    # a moment that is no validation step is refused before any training
    ds["train_cfg"]["val_steps"] = 3
    (tmp_path / "ds.yml").write_text(yaml.safe_dump(ds))
    (tmp_path / "c.yml").write_text((tmp_path / "c.yml").read_text().replace("id: dfb", "id: dfb2"))
    again = Trainer(load_config(str(tmp_path / "c.yml")))
    with pytest.raises(UserError, match=r"evaluates after step\(s\) 4, which are not validation "
                                        r"steps: set train_cfg.val_steps to 2"):
        again.fit()
    again.close()
