"""faces/finders/retinaface.py: RetinaFace's network against the release's names and the
fixture's numbers, its priors and detections, and its weights files."""
import numpy as np
import pytest
import torch

from errors import UserError
from faces.finders.retinaface import RetinaFaceNet, load_retinaface_weights, postprocess, priors
from helpers import FIXTURES, fill_by_rule


def grace_hopper_input(sha256):
    """The fixture's input, rebuilt from matplotlib's sample photo (not shipped twice): BGR minus
    the release's per-channel means, 1 x 3 x H x W."""
    import hashlib

    import cv2
    import matplotlib.cbook
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        raw = fh.read()
    assert hashlib.sha256(raw).hexdigest() == sha256, "matplotlib's grace_hopper.jpg changed"
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR).astype(np.float32)
    return torch.from_numpy(bgr - np.array([104, 117, 123], np.float32)).permute(2, 0, 1)[None]


def _table(path):
    return [tuple(line.split("\t")) for line in open(path).read().splitlines()[1:]]


def _model_table(net):
    return [(k, "x".join(map(str, v.shape)) or "scalar", str(v.dtype).replace("torch.", ""))
            for k, v in net.state_dict().items()]


@pytest.mark.parametrize("backbone,tsv", [("mobilenet0.25", "mobilenet0.25_state_dict.tsv"),
                                          ("resnet50", "resnet50_state_dict.tsv")])
def test_state_dict_names_are_the_releases(backbone, tsv):
    assert _model_table(RetinaFaceNet(backbone)) == _table(FIXTURES / "retinaface" / tsv)


@pytest.fixture(scope="module")
def fixture_and_net():
    ref = FIXTURES / "retinaface"
    data = torch.load(ref / "mnet_parity.pt", weights_only=True)
    data["input"] = grace_hopper_input(data["image_sha256"])
    net = fill_by_rule(RetinaFaceNet("mobilenet0.25"), data["seed"],
                       ref / "mobilenet0.25_state_dict.tsv").eval()
    return data, net


def test_weight_fill_matches_the_fixture(fixture_and_net):
    data, net = fixture_and_net
    sums = torch.tensor([v.double().sum().item() for v in net.state_dict().values()],
                        dtype=torch.float64)
    assert torch.allclose(sums, data["weight_sums"].double(), rtol=1e-5, atol=1e-4)


def test_raw_outputs_and_priors_match(fixture_and_net):
    data, net = fixture_and_net
    with torch.no_grad():
        loc, conf, landms = net(data["input"])
    for ours, key in ((loc, "loc"), (conf, "conf"), (landms, "landms")):
        assert (ours - data[key]).abs().max().item() < 1e-4, key
    assert (priors(data["image_height"], data["image_width"]) - data["priors"]).abs().max() < 1e-7


def test_detections_match(fixture_and_net):
    data, _ = fixture_and_net
    dets = postprocess(data["loc"][0], data["conf"][0], data["landms"][0],
                       data["image_height"], data["image_width"])
    ref = data["detections"].numpy()
    assert dets.shape == ref.shape == (750, 15)
    assert np.abs(dets - ref).max() < 1e-3


def test_weights_file_with_module_prefix_and_missing_file(tmp_path, fixture_and_net):
    _, net = fixture_and_net
    path = tmp_path / "Resnet50_Final_like.pth"
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    fresh = load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(path))
    assert torch.equal(fresh.ClassHead[0].conv1x1.bias, net.ClassHead[0].conv1x1.bias)
    with pytest.raises(UserError, match="Pytorch_Retinaface.*the dlib face detector"):
        load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(tmp_path / "none.pth"))


def test_retinaface_weights_of_another_kind_are_one_line(tmp_path):
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="is not RetinaFace weights"):
        load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(tmp_path / "list.pth"))
    other = RetinaFaceNet("mobilenet0.25").state_dict()
    k = next(k for k, v in other.items() if v.dim() == 4)
    other[k] = torch.zeros(1, 1, 1, 1)
    torch.save(other, tmp_path / "shape.pth")
    with pytest.raises(UserError, match="does not fit RetinaFace"):
        load_retinaface_weights(RetinaFaceNet("mobilenet0.25"), str(tmp_path / "shape.pth"))
