"""torch.distributed from the environment that torchrun (or torch.distributed.launch) sets.

Without that environment the same code runs as one process, and every helper here is a no-op.
"""
import datetime
import logging
import os

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def init(backend: str = "nccl", local_rank: int | None = None, timeout_s: int = 1800):
    """Start the process group if launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if backend == "nccl" and not torch.cuda.is_available():
            log.warning("CUDA is not available: using the gloo backend instead of nccl")
            backend = "gloo"
        # A bounded timeout: if one process dies, the others fail their next collective and exit
        # instead of waiting forever (torchrun also stops the whole group when one worker fails).
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return get_rank(), get_world_size(), device


def is_dist():
    return dist.is_available() and dist.is_initialized()


def get_rank():
    return dist.get_rank() if is_dist() else 0


def get_world_size():
    return dist.get_world_size() if is_dist() else 1


def is_main():
    return get_rank() == 0


def barrier():
    if is_dist():
        dist.barrier()


def broadcast_object(obj, src=0):
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj):
    if not is_dist():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


_HOST_GROUP = []


def _host_group():
    """A gloo group beside an NCCL one, created on first use (every rank reaches that point
    together): host-side flags are agreed through it without waiting for the GPU's queue."""
    if dist.get_backend() != "nccl":
        return None
    if not _HOST_GROUP:
        _HOST_GROUP.append(dist.new_group(backend="gloo"))
    return _HOST_GROUP[0]


def all_reduce(values, device, op="max", host=False):
    """Element-wise max (or sum) of a list of numbers over all ranks; the values themselves in one
    process. Every rank must call it at the same point: it is how ranks agree on a decision.
    ``host``: the values are the host's own (flags, not results of GPU work): they travel through
    a CPU group and never wait for the device; otherwise (device values, e.g. loss sums) through
    the training backend."""
    if not is_dist():
        return list(values)
    group = _host_group() if host else None
    on_device = dist.get_backend() == "nccl" and group is None
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=device if on_device else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM, group=group)
    return t.tolist()


def cleanup():
    if is_dist():
        dist.destroy_process_group()
