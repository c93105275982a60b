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
    """model.heatmap draws the maps for inference's panels, the pictures of videos and photos and
    the trainer's TensorBoard examples alike: one fixed scale per map (the reconstruction
    difference 0 to HEAT_MAX, clipped above; Grad-CAM 0 to 1), one perceptually uniform colour
    map."""
    import numpy as np

    from model.heatmap import (DIFFERENCE, GRAD_CAM, HEAT_MAX, difference_map, heat_colours,
                               heat_map, heat_ramp)
    from trainer.figures import examples_figure
    ramp = heat_ramp(256, 1)[0]  # BGR
    assert np.array_equal(np.round(heat_colours() * 255).astype(np.uint8), ramp[:, ::-1])
    diff = np.array([[0, HEAT_MAX], [2 * HEAT_MAX, HEAT_MAX / 2]], np.float32)
    img = heat_map(diff)
    assert img.shape == (2, 2, 3)
    assert (img[0, 0] == ramp[0]).all() and (img[0, 1] == ramp[255]).all()
    assert (img[1, 0] == ramp[255]).all() and not (img[1, 1] == ramp[255]).all()
    assert heat_map(diff, 8).shape == (8, 8, 3) and heat_map(diff, (6, 4)).shape == (4, 6, 3)
    cam = np.array([[0, 1], [0.5, 2]], np.float32)  # Grad-CAM's scale: 0 to 1
    img = heat_map(cam, top=GRAD_CAM.top)
    assert (img[0, 0] == ramp[0]).all() and (img[0, 1] == ramp[255]).all()
    assert (img[1, 1] == ramp[255]).all() and (img[1, 0] == ramp[127]).all()
    assert (DIFFERENCE.top, GRAD_CAM.top) == (HEAT_MAX, 1.0)
    # a perceptually uniform colour map: matplotlib's viridis, dark for 0, bright for the top
    from matplotlib import colormaps
    assert np.abs(heat_colours() - colormaps["viridis"](np.linspace(0, 1, 256))[:, :3]).max() < 0.02
    x = torch.zeros(2, 3, 8, 8)
    recons = x.clone()
    recons[:, :, :4] = 1.0  # top half far off (clipped to the top colour), bottom half exact
    assert difference_map(x, recons).shape == (2, 8, 8)
    fig = examples_figure((x, recons, torch.tensor([0, 1]), torch.tensor([0.2, 0.8])),
                          ((0.5,) * 3, (0.5,) * 3))
    shown = np.asarray(fig.axes[4].images[0].get_array())  # row 3, first example: the heat map
    assert (shown[:4] == ramp[255][::-1]).all() and (shown[4:] == ramp[0][::-1]).all()
    bar = [c for c in fig.axes[-1].collections if c.norm.vmax is not None]  # the colour bar
    assert len(bar) == 1 and (bar[0].norm.vmin, bar[0].norm.vmax) == (0, HEAT_MAX)
    assert np.allclose(bar[0].cmap(np.linspace(0, 1, 256))[:, :3], heat_colours())
    import matplotlib.pyplot as plt
    plt.close(fig)


# ------------------------------------------------------------------ Grad-CAM (model.cam)
def _tiny(num_classes=1):
    """The plugin detector of tests/plugins: logits = fc(mean(ReLU(conv(x))))."""
    from conftest import ROOT
    from model import DETECTORS
    from registry import import_modules
    import_modules([str(ROOT / "tests" / "plugins" / "tiny_detector.py")])
    torch.manual_seed(0)
    return DETECTORS.get("TinyDetector")(num_classes=num_classes)


@pytest.mark.parametrize("num_classes", [1, 2])
def test_grad_cam_is_the_hand_computation_on_a_linear_head(num_classes):
    """On TinyDetector's one conv (its default layer: the last nn.Conv2d), with A = conv(x) and w
    the head's weights of the log-odds (w1 - w0 for two logits): dy/dA_c = w_c [A_c > 0] / (h w),
    alpha_c its mean over the map, Grad-CAM = ReLU(sum_c alpha_c A_c), scaled to [0, 1] (min 0,
    max 1), resized (bilinear) to the input and scaled again."""
    import cv2
    import numpy as np

    from model.cam import grad_cam
    det = _tiny(num_classes).eval()
    assert det.cam_target() is det.conv
    torch.manual_seed(1)
    x = torch.randn(4, 3, 40, 36)
    got = grad_cam(det, x)
    with torch.no_grad():
        a = det.conv(x).double()
        w = det.fc.weight.double()
        w = w[0] if num_classes == 1 else w[1] - w[0]
        grad = w[None, :, None, None] * (a > 0) / (a.shape[2] * a.shape[3])
        alpha = grad.mean(dim=(2, 3))
        cam = torch.relu((alpha[:, :, None, None] * a).sum(1)).numpy()

    def scaled(m):
        m = m - m.min()
        return m / (m.max() + 1e-7)
    want = np.stack([scaled(cv2.resize(np.float32(scaled(c)), (36, 40))) for c in cam])
    assert (want.max(axis=(1, 2)) > 0.99).all()  # no map is empty: the comparison means something
    assert got.shape == (4, 40, 36) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("name", ["Recce", "Xception", "TinyDetector"])
def test_grad_cam_maps_every_detector_in_eval_mode_and_leaves_it_as_it_was(name):
    """One map per face, the input's size, in [0, 1] with 1 its top; computed in eval mode even
    from a model in training mode or inside inference mode, on inference tensors; the model's
    mode and requires_grad flags are restored and no parameter gets a gradient."""
    import numpy as np

    from model.cam import grad_cam
    det = _tiny() if name == "TinyDetector" else build_detector({"name": name, "pretrained": False})
    flags = [p.requires_grad for p in det.parameters()]
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 72)
    det.eval()
    eval_maps = grad_cam(det, x)
    det.train()
    with torch.inference_mode():
        maps = grad_cam(det, x.clone())
    assert maps.shape == (2, 64, 72) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1
    assert all(m.max() > 0.99 or m.max() == 0 for m in maps)
    np.testing.assert_allclose(maps, eval_maps, atol=1e-5)  # eval mode: no noise, no dropout
    assert det.training
    assert [p.requires_grad for p in det.parameters()] == flags
    assert all(p.grad is None for p in det.parameters())
    target = det.cam_target()
    if name != "TinyDetector":
        assert target is det.encoder.act4  # the encoder's last feature map, which the head pools
    assert grad_cam(det, list(x)).shape == (2, 64, 72)  # a list of faces, as the scorer has them


def test_cam_layer_errors_name_the_detector_and_the_layer():
    import torch.nn as nn

    from model import Detector
    from model.cam import grad_cam
    det = _tiny()
    x = torch.randn(1, 3, 32, 32)
    det.cam_layer = "nope"
    with pytest.raises(UserError, match=r"^TinyDetector.cam_layer: 'nope' is not a module"):
        grad_cam(det, x)
    det.cam_layer = "fc"  # N x C logits, no feature map
    with pytest.raises(UserError, match=r"^TinyDetector.cam_layer: .*N x C x h x w.*\(1, 1\)"):
        grad_cam(det, x)
    recce = build_detector({"name": "Recce", "pretrained": False})
    recce.cam_layer = "encoder.fc"  # kept for the original's checkpoints, never run
    with pytest.raises(UserError, match=r"^Recce.cam_layer: the layer does not run"):
        grad_cam(recce, torch.randn(1, 3, 64, 64))

    class NoConv(Detector):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 1)

        def forward(self, x, return_aux=False):
            return self.fc(x.mean(dim=(2, 3)))
    with pytest.raises(UserError, match=r"^NoConv.cam_layer: NoConv has no nn.Conv2d"):
        grad_cam(NoConv(), x)
