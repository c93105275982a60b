"""Inference without launch overhead: a detector's eval forward captured as CUDA graphs, one per
input shape, and replayed. At batch 1 a forward of RECCE is hundreds of small kernel launches; a
replay is one. Where CUDA graphs are not available (the CPU), or a capture fails, or its
probabilities differ from the eager forward's by more than ``TOLERANCE`` on the batch it was
captured with, the eager forward is used (said once on the log)."""
import logging

import torch

from .detector import scores

log = logging.getLogger("recce")
TOLERANCE = 1e-4
MAX_SHAPES = 4  # graphs kept (each holds its own activations); other shapes run eagerly


class GraphedScorer:
    """``scorer(x, aux=False)`` -> the ``scores`` dict of ``det(x)``, replayed from a CUDA graph
    when it can be. ``det`` must be in eval mode on its device; its weights must not change."""

    def __init__(self, det, enabled=True):
        self.det = det
        param = next(det.parameters(), None)
        self.enabled = bool(enabled and param is not None and param.is_cuda)
        self.graphs = {}
        self.failed = None

    def _eager(self, x, aux):
        with torch.inference_mode():
            return scores(self.det(x, return_aux=aux))

    def __call__(self, x, aux=False):
        if not self.enabled or self.failed:
            return self._eager(x, aux)
        key = (tuple(x.shape), x.dtype, aux)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_SHAPES:
                return self._eager(x, aux)
            entry = self._capture(x, aux)
            if entry is None:
                return self._eager(x, aux)
            self.graphs[key] = entry
        graph, static_in, static_out = entry
        static_in.copy_(x)
        graph.replay()
        return {k: v.clone() for k, v in static_out.items()}

    def _capture(self, x, aux):
        try:
            static_in = x.clone()
            side = torch.cuda.Stream(device=x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(3):  # warm-up outside the graph (cuDNN picks its algorithms)
                    self._eager(static_in, aux)
            torch.cuda.current_stream(x.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                static_out = scores(self.det(static_in, return_aux=aux))
            graph.replay()
            eager = self._eager(x, aux)
            diff = float((static_out["prob"] - eager["prob"]).abs().max())
            if not diff <= TOLERANCE:
                raise RuntimeError(f"the replay differs from the eager forward by {diff:.2e}")
            return graph, static_in, static_out
        except Exception as exc:  # noqa: BLE001 - any capture problem: the eager forward, said
            self.failed = " ".join(str(exc).split())[:200] or type(exc).__name__
            log.warning("CUDA graphs not used (%s): the eager forward scores instead", self.failed)
            return None
