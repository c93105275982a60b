import time

import pytest
import torch
import torch.nn.functional as F

from conftest import FIXTURES, fill_by_rule
from model import Recce, RecceLoss, build_detector
from model.blocks import GraphReasoning
from errors import UserError


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


def _loop_reasoning(gr, a_map, b_map, c_map):
    """Per-position reference written plainly: unfold, then one node at a time."""
    n, _, h, w = a_map.shape
    unfold_b = torch.nn.Unfold(2, stride=2)(b_map).view(n, b_map.shape[1], 4, h * w)
    unfold_c = torch.nn.Unfold(4, stride=4)(c_map).view(n, c_map.shape[1], 16, h * w)
    a_emb = gr.va_embedding(a_map).flatten(2)
    gate_b = 1 - gr.va_gated_b(a_map).flatten(2)
    gate_c = 1 - gr.va_gated_c(a_map).flatten(2)
    out = []
    for p in range(h * w):
        a = a_emb[:, :, p]  # N 256
        parts = []
        for unfold, emb, rew, gate in [(unfold_b, gr.vb_embedding, gr.reweight_ab, gate_b),
                                       (unfold_c, gr.vc_embedding, gr.reweight_ac, gate_c)]:
            v = emb(unfold[:, :, :, p].transpose(1, 2))  # N K 256
            k = v.shape[1]
            logit = rew[0](torch.cat([a[:, None].expand(-1, k, -1), v], dim=-1))  # N K 1
            wgt = torch.softmax(F.relu(logit), dim=1)
            parts.append((wgt * v).sum(1) * gate[:, :, p])
        out.append(torch.sigmoid(torch.cat(parts + [a], dim=1)))
    fused = torch.stack(out, dim=-1).view(n, -1, h, w)
    return gr.reproject(fused)


def test_graph_reasoning_batched_equals_loop():
    torch.manual_seed(0)
    gr = GraphReasoning().eval()
    a = torch.randn(2, 728, 3, 5)
    b = torch.randn(2, 256, 6, 10)
    c = torch.randn(2, 128, 12, 20)
    with torch.no_grad():
        batched, looped = gr(a, b, c), _loop_reasoning(gr, a, b, c)
    assert batched.shape == (2, 728, 3, 5)
    assert (batched - looped).abs().max().item() < 1e-6


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


def test_build_detector_defaults_and_unknown_name():
    model = build_detector({"name": "Recce", "num_classes": 2, "pretrained": False})
    assert model.fc.out_features == 2
    with pytest.raises(UserError, match="model.name: unknown detector 'Xceptoin'.*Recce, Xception"):
        build_detector({"name": "Xceptoin"})


def test_pretrained_unavailable_is_one_clear_error_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    import model.pretrained as pre
    monkeypatch.setattr(pre, "_find_cached", lambda: None)
    start = time.monotonic()
    with pytest.raises(UserError, match="model.pretrained: false"):
        build_detector({"name": "Recce"})  # absent pretrained means True
    assert time.monotonic() - start < 30
    with pytest.raises(UserError, match="no such file"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "missing.pth")})


def test_pretrained_from_local_file(tmp_path):
    import timm
    torch.manual_seed(3)
    src = timm.create_model("legacy_xception")
    # Cadene's layout: last_linear head and 2-d pointwise weights
    state = {k.replace("fc.", "last_linear."): (v[:, :, 0, 0] if k.endswith("pointwise.weight") else v)
             for k, v in src.state_dict().items()}
    path = tmp_path / "xception.pth"
    torch.save(state, path)
    model = build_detector({"name": "Recce", "pretrained": str(path)})
    assert torch.equal(model.encoder.block5.rep[1].pointwise.weight, src.block5.rep[1].pointwise.weight)
    torch.save({"not": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(UserError, match="not an Xception"):
        build_detector({"name": "Recce", "pretrained": str(tmp_path / "bad.pth")})


def test_one_heat_map_renderer_and_one_colour_scale():
    """model.heatmap draws the reconstruction difference for inference's panels, the pictures of
    videos and photos and the trainer's TensorBoard examples alike: one fixed scale, 0 to
    HEAT_MAX (clipped above), one colour map."""
    import numpy as np

    from model.heatmap import HEAT_MAX, difference_map, heat_colours, heat_map, heat_ramp
    from trainer.train import _examples_figure
    ramp = heat_ramp(256, 1)[0]  # BGR
    assert np.array_equal(np.round(heat_colours() * 255).astype(np.uint8), ramp[:, ::-1])
    diff = np.array([[0, HEAT_MAX], [2 * HEAT_MAX, HEAT_MAX / 2]], np.float32)
    img = heat_map(diff)
    assert img.shape == (2, 2, 3)
    assert (img[0, 0] == ramp[0]).all() and (img[0, 1] == ramp[255]).all()
    assert (img[1, 0] == ramp[255]).all() and not (img[1, 1] == ramp[255]).all()
    assert heat_map(diff, 8).shape == (8, 8, 3) and heat_map(diff, (6, 4)).shape == (4, 6, 3)
    x = torch.zeros(2, 3, 8, 8)
    recons = x.clone()
    recons[:, :, :4] = 1.0  # top half far off (clipped to the top colour), bottom half exact
    assert difference_map(x, recons).shape == (2, 8, 8)
    fig = _examples_figure((x, recons, torch.tensor([0, 1]), torch.tensor([0.2, 0.8])),
                           ((0.5,) * 3, (0.5,) * 3))
    shown = np.asarray(fig.axes[4].images[0].get_array())  # row 3, first example: the heat map
    assert (shown[:4] == ramp[255][::-1]).all() and (shown[4:] == ramp[0][::-1]).all()
    bar = [c for c in fig.axes[-1].collections if c.norm.vmax is not None]  # the colour bar
    assert len(bar) == 1 and (bar[0].norm.vmin, bar[0].norm.vmax) == (0, HEAT_MAX)
    assert np.allclose(bar[0].cmap(np.linspace(0, 1, 256))[:, :3], heat_colours())
    import matplotlib.pyplot as plt
    plt.close(fig)
