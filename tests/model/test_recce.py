"""model/recce.py: RECCE's state dict and numbers against the original release, its forward on
any size and batch, its training noise, and its loss (RecceLoss) against hand computations."""
import math

import pytest
import torch

from helpers import FIXTURES, fill_by_rule
from model import Recce, RecceLoss


def _table(path):
    rows = [line.split("\t") for line in open(path).read().splitlines()[1:]]
    return [(n, s, d) for n, s, d in rows]


def _model_table(model):
    return [(k, "x".join(map(str, v.shape)) or "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in model.state_dict().items()]


@pytest.mark.parametrize("num_classes,tsv", [(1, "recce_state_dict.tsv"),
                                             (2, "recce_state_dict_2class.tsv")])
def test_state_dict_matches_original_table(num_classes, tsv):
    model = Recce(num_classes=num_classes)
    assert _model_table(model) == _table(FIXTURES / tsv)


@pytest.mark.parametrize("case_index", [0, 1])
def test_parity_with_original(case_index):
    ref = FIXTURES
    case = torch.load(ref / "recce_parity.pt", weights_only=True)[case_index]
    model = fill_by_rule(Recce(), case["seed"], ref / "recce_state_dict.tsv").eval()
    with torch.no_grad():
        out = model(case["input"], return_aux=True)
        losses = RecceLoss()(out, case["input"], case["labels"])
    assert torch.allclose(out["logits"], case["logits"], atol=2e-5, rtol=0)
    assert torch.allclose(out["corr"], case["corr"], atol=2e-5, rtol=0)
    stride = case["recons_stride"]  # the 299 px case keeps every 4th pixel of the reconstruction
    assert torch.allclose(out["recons"][..., ::stride, ::stride], case["recons"], atol=1e-4, rtol=0)
    for ours, theirs in [("cls_raw", "loss_cls"), ("cls", "loss_cls_flooded"),
                         ("recons", "loss_recons"), ("metric", "loss_metric"),
                         ("total", "loss_total")]:
        assert abs(losses[ours].item() - case[theirs].item()) < 2e-5, ours


@pytest.mark.parametrize("batch,size", [(1, (64, 64)), (2, (7, 7)), (2, (48, 80)), (1, (33, 21))])
@pytest.mark.parametrize("num_classes", [1, 2])
def test_forward_shapes_any_size_and_batch(batch, size, num_classes):
    model = Recce(num_classes=num_classes).eval()
    x = torch.rand(batch, 3, *size) * 2 - 1
    with torch.no_grad():
        logits = model(x)
        out = model(x, return_aux=True)
    assert logits.shape == (batch, num_classes)
    assert out["recons"].shape == x.shape
    assert out["corr"].shape == (3, batch, batch)
    assert torch.isfinite(logits).all()
    assert torch.equal(logits, out["logits"])


def test_too_small_input_is_refused():
    with pytest.raises(ValueError, match="at least 7"):
        Recce()(torch.zeros(1, 3, 6, 32))


def test_every_trainable_parameter_gets_a_gradient_batch_of_one():
    model = Recce().train()
    x = torch.rand(1, 3, 64, 64) * 2 - 1  # BN needs >1 value per channel at the end
    y = torch.tensor([1])  # a fake sample alone: no reconstruction term
    losses = RecceLoss()(model(x, return_aux=True), x, y)
    losses["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    assert not model.encoder.fc.weight.requires_grad


def test_training_noise_only_in_train_mode(monkeypatch):
    model = Recce()
    calls = []
    original = model._add_noise
    monkeypatch.setattr(model, "_add_noise", lambda x: calls.append(1) or original(x))
    x = torch.zeros(2, 3, 16, 16)
    model.eval()(x)
    assert calls == []
    model.train()(x)
    assert calls == [1]


def test_noise_is_tiny_per_sample_and_clipped():
    torch.manual_seed(1)
    x = torch.ones(64, 3, 4, 4)
    noisy = Recce()._add_noise(x)
    changed = (noisy != x).flatten(1).any(1)
    assert 10 < changed.sum() < 54  # about half of the samples
    assert noisy.max() <= 1.0 and (x - noisy).abs().max() < 1e-5


# ------------------------------------------------------------------ RecceLoss, by hand
def _outputs(logits, recons, corr):
    return {"logits": torch.tensor(logits), "recons": recons, "corr": corr}


def _bce(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_hand_computed_terms_mixed_batch():
    labels = torch.tensor([0, 0, 1])
    x = torch.zeros(3, 3, 2, 2)
    recons = torch.stack([torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), -0.25),
                          torch.full((3, 2, 2), 9.0)])
    s = torch.tensor([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])
    corr = torch.stack([s, s, torch.ones(3, 3)])
    out = RecceLoss()(_outputs([[0.3], [-1.0], [2.0]], recons, corr), x, labels)
    cls = (_bce(0.3, 0) + _bce(-1.0, 0) + _bce(2.0, 1)) / 3
    assert out["cls_raw"].item() == pytest.approx(cls, abs=1e-6)
    assert out["cls"].item() == pytest.approx(abs(cls - 0.04) + 0.04, abs=1e-6)
    assert out["recons"].item() == pytest.approx((0.5 + 0.25) / 2, abs=1e-6)  # the fake is ignored
    same = (0.8 + 0.8) / (2 + 1e-6)
    diff = (0.3 + 0.5) * 2 / (4 + 1e-6)
    per = max(0.0, 1 - same + diff)
    ones = max(0.0, 1 - 2 / (2 + 1e-6) + 4 / (4 + 1e-6))
    assert out["metric"].item() == pytest.approx(2 * per + ones, abs=1e-5)
    total = out["cls"] + 0.1 * out["recons"] + 0.1 * out["metric"]
    assert out["total"].item() == pytest.approx(total.item(), abs=1e-7)


def test_flooding_lifts_a_small_loss():
    out = RecceLoss(flood_level=0.5)(_outputs([[8.0]], torch.zeros(1, 3, 2, 2),
                                               torch.ones(3, 1, 1)), torch.zeros(1, 3, 2, 2),
                                     torch.tensor([1]))
    assert out["cls"].item() == pytest.approx(abs(_bce(8.0, 1) - 0.5) + 0.5, abs=1e-6)


def test_batch_of_one_real():
    x = torch.zeros(1, 3, 2, 2)
    out = RecceLoss()(_outputs([[0.0]], torch.full((1, 3, 2, 2), 0.1), torch.ones(3, 1, 1)), x,
                      torch.tensor([0]))
    assert out["recons"].item() == pytest.approx(0.1, abs=1e-7)
    assert out["metric"].item() == pytest.approx(3.0)  # no pairs at all: max(0, 1 - 0 + 0) each
    assert out["cls_raw"].item() == pytest.approx(math.log(2), abs=1e-6)


def test_two_class_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    out = RecceLoss(loss="cross_entropy", flood_level=0.0)(
        {"logits": logits, "recons": torch.zeros(2, 3, 2, 2), "corr": torch.ones(3, 2, 2)},
        torch.zeros(2, 3, 2, 2), torch.tensor([0, 1]))
    expected = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    assert out["cls"].item() == pytest.approx(expected, abs=1e-6)
