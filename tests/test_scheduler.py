"""scheduler/: learning-rate schedules with warm-up, the plateau scheduler stepped at validation,
their state through a resume."""
import pytest
import torch

from errors import UserError
from optimizer import build_optimizer
from scheduler import SCHEDULERS, build_scheduler


def _params():
    return [torch.nn.Parameter(torch.zeros(2))]


def _run(sched_cfg, steps, warmup=0):
    opt = build_optimizer(_params(), {"name": "sgd", "lr": 1.0})
    sched = build_scheduler(opt, sched_cfg, warmup)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs, sched


def test_constant_lr_is_truly_constant():
    lrs, _ = _run({"name": "ConstantLR"}, 10)
    assert lrs == [1.0] * 10
    lrs, _ = _run(None, 4)
    assert lrs == [1.0] * 4


def test_step_lr_and_warmup():
    lrs, _ = _run({"name": "StepLR", "step_size": 3, "gamma": 0.5}, 7)
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    lrs, _ = _run({"name": "StepLR", "step_size": 3, "gamma": 0.5}, 8, warmup=4)
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lrs[4:] == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_plateau_steps_on_validation_only():
    cfg = {"name": "ReduceLROnPlateau", "patience": 0, "factor": 0.1}
    lrs, sched = _run(cfg, 5)
    assert lrs == [1.0] * 5
    sched.step_on_validation(1.0)
    sched.step_on_validation(2.0)
    assert sched.get_last_lr()[0] == pytest.approx(0.1)


def test_scheduler_state_round_trip():
    _, sched = _run({"name": "MultiStepLR", "milestones": [2, 5]}, 3, warmup=1)
    opt = build_optimizer(_params(), {"name": "sgd", "lr": 1.0})
    fresh = build_scheduler(opt, {"name": "MultiStepLR", "milestones": [2, 5]}, 1)
    fresh.load_state_dict(sched.state_dict())
    assert fresh.iteration == 3 and fresh.inner.last_epoch == sched.inner.last_epoch


def test_unknown_scheduler():
    opt = build_optimizer(_params(), {"name": "sgd", "lr": 1.0})
    with pytest.raises(UserError, match="unknown scheduler 'Cyclic'.*StepLR"):
        build_scheduler(opt, {"name": "Cyclic"})
    assert "CosineAnnealingWarmRestarts" in SCHEDULERS
