import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"  # numbers from the original release, shipped with the tests
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


def fill_by_rule(model, seed, tsv):
    """The weight rule of the reference fixtures (tests/fixtures/README.md)."""
    names = [line.split("\t")[0] for line in open(tsv).read().splitlines()[1:]]
    g = torch.Generator().manual_seed(seed)
    current = model.state_dict()
    state = {}
    for name in names:
        shape = current[name].shape
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros((), dtype=torch.long)
            continue
        r = torch.randn(shape, generator=g, dtype=torch.float64)
        if name.endswith("running_var"):
            v = 1 + 0.1 * r.abs()
        elif name.endswith("running_mean"):
            v = 0.1 * r
        elif name.endswith("weight") and len(shape) == 1:
            v = 1 + 0.1 * r
        elif name.endswith("bias"):
            v = 0.1 * r
        else:
            fan_in = 1
            for s in shape[1:]:
                fan_in *= s
            v = r / fan_in ** 0.5
        state[name] = v.float()
    model.load_state_dict(state, strict=True)
    return model


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """The demo dataset, made once per test session (a few seconds)."""
    from dataset.demo import make_demo_dataset
    root = tmp_path_factory.mktemp("demo") / "demo"
    make_demo_dataset(str(root))
    return str(root)
