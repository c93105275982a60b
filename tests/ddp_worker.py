"""Run by the torchrun test: train a few steps, then dump this rank's parameters."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from trainer.config import load_config  # noqa: E402
from trainer.train import Trainer  # noqa: E402

torch.set_num_threads(1)
trainer = Trainer(load_config(sys.argv[1]))
trainer.fit()
params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
torch.save(params, f"{os.environ['RECCE_TEST_DUMP']}{trainer.rank}.pt")
