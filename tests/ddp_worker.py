r"""Run by the torchrun tests: train a few steps, then dump what this rank ended with.

    RECCE_TEST_DUMP=prefix RECCE_TEST_NAN=<rank>:<call> \
        torchrun ... ddp_worker.py CONFIG[:CONFIG...] [--opt ...]

Several configs (joined by os.pathsep) are run one after the other by the same ranks, each
dumped to ``<prefix><i>-<rank>.pt`` (one config: ``<prefix><rank>.pt``).

With RECCE_TEST_NAN set, the loss of that rank is made NaN at that call (the other rank's stays
finite): every rank must still take the same decision (stop or skip) at the same step.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

from trainer.config import load_config, split_overrides
from trainer.evaluate import evaluate
from trainer.train import NonFiniteLoss, Trainer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import NanAt

torch.set_num_threads(1)
model_opts, dataset_opts = split_overrides(sys.argv[2:])
configs = sys.argv[1].split(os.pathsep)
for i, config in enumerate(configs):
    trainer = Trainer(load_config(config, model_opts, dataset_opts))
    nan = os.environ.get("RECCE_TEST_NAN")
    if nan:
        nan_rank, nan_call = map(int, nan.split(":"))
        trainer.add_hook(NanAt(nan_call, nan_rank))
    outcome = "finished"
    try:
        trainer.fit()
    except NonFiniteLoss:
        outcome = "stopped"
    val = evaluate(trainer.ddp, trainer.val_loader, trainer.device)
    params = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    name = f"{i}-{trainer.rank}" if len(configs) > 1 else f"{trainer.rank}"
    torch.save({"params": params, "step": trainer.step, "outcome": outcome,
                "val_index": torch.from_numpy(val["index"]), "val_size": len(trainer.val_set)},
               f"{os.environ['RECCE_TEST_DUMP']}{name}.pt")
    trainer.close()
