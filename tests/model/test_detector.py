"""model/detector.py: every registered detector through the contract (forward, its loss, a
checkpoint round trip, an export), building one by name, registering one, and its loss."""
import pytest
import torch

from errors import UserError
from model import DETECTORS, Detector, InputSpec, RecceLoss, build_detector
from model.checkpoint import load_detector

REGISTERED = sorted(DETECTORS)  # the project's own detectors, before any test adds one


@pytest.mark.parametrize("name", REGISTERED)
@pytest.mark.slow
def test_detector_contract(name, tmp_path, make_checkpoint):
    cls = DETECTORS.get(name)
    assert issubclass(cls, Detector) and isinstance(cls.default_spec, InputSpec)
    assert min(cls.default_spec.size) >= cls.min_input_size
    det = build_detector({"name": name, "pretrained": False})
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    det.eval()
    with torch.no_grad():
        assert det(x).shape == (2, 1) and det(x[:1]).shape == (1, 1)
        out = det(x, return_aux=True)
        assert torch.allclose(det.predict(x), torch.sigmoid(det(x)[:, 0]), atol=1e-6)
    assert ("recons" in out) == cls.has_reconstruction
    if cls.has_reconstruction:
        assert out["recons"].shape == x.shape
    # every trainable parameter gets a gradient from the detector's own loss, batch of one too
    det.train()
    crit = det.build_loss({})
    for batch in (x[:1], x):
        det.zero_grad()
        y = torch.arange(len(batch)) % 2
        crit(det(batch, return_aux=True), batch, y)["total"].backward()
        missing = [n for n, p in det.named_parameters() if p.requires_grad and p.grad is None]
        assert not missing, missing[:5]
    # checkpoint round trip: the saved config says which detector, the saved spec how to feed it
    spec = InputSpec((48, 40), (0.4, 0.45, 0.5), (0.2, 0.25, 0.3), "bicubic")
    path = make_checkpoint(tmp_path / "best_model_1.bin", det,
                           config={"model": {"name": name, "num_classes": 1}}, spec=spec)
    loaded = load_detector(path)
    assert type(loaded) is cls and loaded.spec == spec and loaded.spec_source == "saved"
    det.eval()
    with torch.no_grad():
        assert torch.allclose(loaded(x), det(x), atol=1e-6)
    from tools.export import export, load_for_export
    diff = export(load_for_export(path), "torch.export", str(tmp_path / "m.pt2"))
    assert diff < 1e-4


def test_register_detector_takes_replace_as_decorator_and_as_a_plain_call():
    from model import register_detector

    class Probe(Detector):
        pass

    class Other(Detector):
        pass

    try:
        register_detector(Probe, name="ReplaceProbe")
        with pytest.raises(UserError, match="model.name: .*'ReplaceProbe'.*registered already"):
            register_detector(Other, name="ReplaceProbe")
        assert DETECTORS.get("ReplaceProbe") is Probe
        assert register_detector(Other, name="ReplaceProbe", replace=True) is Other
        assert DETECTORS.get("ReplaceProbe") is Other

        @register_detector(name="ReplaceProbe", replace=True)
        class Third(Detector):
            pass

        assert DETECTORS.get("ReplaceProbe") is Third
    finally:
        DETECTORS.pop("ReplaceProbe")


def test_build_detector_defaults_and_unknown_name():
    model = build_detector({"name": "Recce", "num_classes": 2, "pretrained": False})
    assert model.fc.out_features == 2
    with pytest.raises(UserError, match="model.name: unknown detector 'Xceptoin'.*Recce, Xception"):
        build_detector({"name": "Xceptoin"})


def test_the_detector_builds_its_loss_checked_against_its_classes():
    det = build_detector({"name": "Recce", "pretrained": False})
    crit = det.build_loss({"flood_level": 0.1})
    assert isinstance(crit, RecceLoss) and crit.flood_level == 0.1 and crit.loss == "binary_ce"
    two = build_detector({"name": "Recce", "pretrained": False, "num_classes": 2})
    with pytest.raises(UserError, match="num_classes 2"):
        two.build_loss({"kind": "binary_ce"})
    with pytest.raises(UserError, match="loss.kind: unknown loss 'focal'"):
        det.build_loss({"kind": "focal"})
    with pytest.raises(UserError, match="loss.lambda: the loss of the detector Recce takes no"):
        det.build_loss({"lambda": 0.1})
    assert det.build_loss({"lambda_2": 0.3}).lambda_2 == 0.3
    xc = build_detector({"name": "Xception", "pretrained": False})
    assert type(xc.build_loss({})).__name__ == "ClassificationLoss"
