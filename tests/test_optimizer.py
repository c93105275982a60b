"""optimizer/: every optimizer by name, the original's Adam, fused kernels where torch has
them, and a saved state resumed under another kernel choice."""
import copy

import pytest
import torch

from errors import UserError
from optimizer import FUSED, OPTIMIZERS, build_optimizer, load_state


def _params():
    return [torch.nn.Parameter(torch.zeros(2))]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_builds_without_mutating_config(name):
    cfg = {"name": name, "lr": 0.01}
    opt = build_optimizer(_params(), cfg)
    assert cfg == {"name": name, "lr": 0.01}
    assert opt.param_groups[0]["lr"] == 0.01


def test_original_adam_settings():
    opt = build_optimizer(_params(), {"name": "adam", "lr": 0.0002, "weight_decay": 0.00001})
    assert isinstance(opt, torch.optim.Adam) and opt.param_groups[0]["weight_decay"] == 1e-5


def test_unknown_optimizer_lists_known_ones():
    with pytest.raises(UserError, match="unknown optimizer 'lamb'.*adamw"):
        build_optimizer(_params(), {"name": "lamb"})
    with pytest.raises(UserError, match="bad parameter for adam"):
        build_optimizer(_params(), {"name": "adam", "momentum": 0.9})


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_is_asked_for_where_torch_has_it_and_the_config_did_not_choose(name):
    opt = build_optimizer(_params(), {"name": name, "lr": 0.01}, fused=True)
    assert bool(opt.param_groups[0].get("fused")) == (name in FUSED)
    assert getattr(opt, "_step_supports_amp_scaling", False) == (name in FUSED)  # grad scaler
    if name in FUSED:
        mine = build_optimizer(_params(), {"name": name, "lr": 0.01, "fused": False}, fused=True)
        assert not mine.param_groups[0]["fused"]
        own = build_optimizer(_params(), {"name": name, "lr": 0.01, "foreach": True}, fused=True)
        assert not own.param_groups[0].get("fused") and own.param_groups[0]["foreach"]
    assert not build_optimizer(_params(), {"name": name, "lr": 0.01}).param_groups[0].get("fused")


def test_fused_falls_back_where_torch_refuses_it():
    gen = (p for p in _params())  # a generator is not spent by the refused attempt
    opt = build_optimizer(gen, {"name": "adam", "lr": 0.1, "differentiable": True}, fused=True)
    assert not opt.param_groups[0].get("fused") and len(opt.param_groups[0]["params"]) == 1


def _adam_steps(opt, param, steps):
    for i in range(steps):
        param.grad = torch.tensor([0.3, -1.0]) * (i + 1)
        opt.step()


@pytest.mark.parametrize("saved_fused,now_fused", [(False, True), (True, False)])
def test_a_saved_state_resumes_under_this_runs_kernel_choice(saved_fused, now_fused):
    """A checkpoint of a GPU run (fused) resumes on the CPU and back; torch alone would take the
    saved run's flag (and a non-fused Adam then refuses the grad scaler's arguments)."""
    cfg = {"name": "adam", "lr": 0.1}
    p0 = torch.nn.Parameter(torch.zeros(2))
    first = build_optimizer([p0], cfg, fused=saved_fused)
    _adam_steps(first, p0, 3)
    state = copy.deepcopy(first.state_dict())  # as saved and read back
    p1 = torch.nn.Parameter(p0.detach().clone())
    second = build_optimizer([p1], cfg, fused=now_fused)
    load_state(second, state)
    assert bool(second.param_groups[0]["fused"]) == now_fused
    step = second.state[p1]["step"]
    assert step.item() == 3 and step.dtype == torch.float32
    _adam_steps(second, p1, 2)
    _adam_steps(first, p0, 2)  # the uninterrupted run
    assert torch.allclose(p1, p0, atol=1e-6, rtol=0)
    assert second.state[p1]["step"].item() == 5


