"""How a detector's forward runs when it scores: the backend (eager PyTorch or ONNX Runtime) and the
precision (fp32, or bf16 where asked for or where the CPU computes it natively), one choice for
the API, inference.py and everything built on them.

``build_scorer(model, device, backend, precision, threads)`` returns a callable
``scorer(x, aux=False)`` -> the ``scores`` dict of ``model(x)`` (``logits``, ``prob``, ``logit``),
with ``scorer.backend`` and ``scorer.precision`` saying what scores and ``scorer.note`` why, when
it is not what was asked for. Where a map is asked for (``aux``: the reconstruction), the eager
fp32 model answers: heat maps and Grad-CAM work the same on every backend.

- ``torch``: the eager forward (on a GPU, replayed CUDA graphs: ``model.graphs``); ``bf16``: under
  ``torch.autocast`` in bfloat16, on the CPU with a channels-last copy of the model.
- ``onnxruntime``: the CPU session of the detector's ONNX export (``model.export``), made once per
  weights and input shape and cached under ``$RECCE_CACHE`` (default ``~/.cache/recce``), named by a
  hash of the weights' content, the project version, the input spec and the detector; a cached
  file that cannot be opened is rebuilt (said on one line).
- ``auto``: ONNX Runtime on the CPU where it is installed, else ``torch``; precision ``auto``: bf16
  only where the CPU has native bf16 (AMX or AVX-512 BF16) and its probabilities on a check batch
  lie within ``BF16_AUTO_TOLERANCE`` of fp32's, else fp32.

Every backend is checked when it is made, on a fixed random batch against the eager fp32 forward
(the larger of the largest probability difference and the largest logit difference relative to
the logit's size, since probabilities saturate): ONNX Runtime within ``TOLERANCE`` (else the eager
forward, said on one line), bf16's difference said once.
"""
import copy
import hashlib
import json
import logging
import os

import torch

from checks import BACKENDS, PRECISIONS, check_argument
from errors import UserError

from .detector import scores
from .graphs import GraphedScorer

log = logging.getLogger("recce")
TOLERANCE = 1e-4  # ONNX Runtime against eager fp32 (probabilities)
BF16_AUTO_TOLERANCE = 0.02  # what precision "auto" accepts of bf16 on the check batch
CHECK_BATCH = 2


def native_bf16():
    """The CPU's native bf16 instructions (``amx_bf16``, ``avx512_bf16``) from /proc/cpuinfo;
    an empty list where it has none or does not say."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    except OSError:
        pass
    return []


def cache_dir():
    return os.path.join(os.environ.get("RECCE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "recce"), "onnx")


def weights_digest(model):
    """A hash of the detector's weights (names, dtypes, shapes, bytes): its content, whatever
    file it came from."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():  # the values in their logical order, whatever the memory layout
            h.update(t.detach().cpu().flatten().clone().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def export_key(model, size):
    """The cache key of an ONNX export: weights, project version, input spec and size, detector."""
    from version import project_version
    spec = model.spec.to_dict()
    text = json.dumps({"weights": weights_digest(model), "version": project_version(),
                       "spec": spec, "size": list(size), "detector": type(model).__name__},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def check_batch(model, n=CHECK_BATCH):
    g = torch.Generator().manual_seed(0)
    h, w = model.spec.size
    return torch.rand(n, 3, h, w, generator=g) * 2 - 1


class _Scorer:
    """The eager fp32 forward (CUDA graphs on a GPU), and the base of the others."""

    def __init__(self, model, graphs=True):
        self.model = model
        self.eager = GraphedScorer(model, enabled=graphs)
        self.backend, self.precision, self.note = "torch", "fp32", None

    def run(self, x):
        return self.eager(x)

    def __call__(self, x, aux=False):
        return self.eager(x, aux=True) if aux else self.run(x)

    def describe(self):
        return f"{self.backend} {self.precision}" + (f" ({self.note})" if self.note else "")


class _Bf16Scorer(_Scorer):
    def __init__(self, model, graphs=True):
        super().__init__(model, graphs)
        self.precision = "bf16"
        self.device_type = next(model.parameters()).device.type
        self.fast = model
        if self.device_type == "cpu":
            self.fast = copy.deepcopy(model).to(memory_format=torch.channels_last).eval()

    def run(self, x):
        if self.device_type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device_type, dtype=torch.bfloat16):
            out = self.fast(x)
        return scores(out)


class _OrtScorer(_Scorer):
    def __init__(self, model, session, path, graphs=True):
        super().__init__(model, graphs)
        self.backend, self.session, self.path = "onnxruntime", session, path
        self.device = next(model.parameters()).device

    def run(self, x):
        logits = self.session.run(None, {"image": x.detach().float().cpu().numpy()})[0]
        return scores(torch.from_numpy(logits).to(self.device))


def _ort_session(path, threads):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def onnx_session(model, threads=None):
    """(session, path) of the detector's cached ONNX export, made (and checked against eager by
    ``model.export.export``) where missing, rebuilt where the cached file cannot be opened."""
    from .export import export
    folder = cache_dir()
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{export_key(model, model.spec.size)}.onnx")
    if os.path.isfile(path):
        try:
            return _ort_session(path, threads), path
        except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: made anew
            log.warning("the cached ONNX export %s cannot be opened (%s): made anew", path,
                        " ".join(str(exc).split())[:120])
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format).eval()
    plain.channels_last = False
    log.info("exporting %s to ONNX for onnxruntime (once per checkpoint and input size): %s",
             type(model).__name__, path)
    diff = export(plain, "onnx", path, quiet=True)
    if not os.path.isfile(path):
        raise RuntimeError(f"the export differs from the eager forward by {diff:.2e}")
    return _ort_session(path, threads), path


def _largest_difference(scorer, reference, x):
    """The largest probability difference from ``reference`` (the eager fp32 scores of ``x``),
    or, where larger, the largest logit difference relative to the logit's size (probabilities
    saturate at 0 and 1 and would hide a difference there)."""
    got = scorer.run(x)
    prob = float((got["prob"].float().cpu() - reference["prob"]).abs().max())
    z = reference["logit"]
    rel = float(((got["logit"].float().cpu() - z).abs() / z.abs().clamp(min=1.0)).max())
    diff = max(prob, rel)
    return float("inf") if diff != diff else diff  # NaN: as far as can be


def build_scorer(model, device, backend="torch", precision="fp32", threads=None, graphs=True):
    """The scorer of ``model`` (eval mode, on ``device``) by ``backend`` and ``precision`` (see
    the module's docstring); ``threads``: ONNX Runtime's intra-op threads (torch's are the
    process's: ``set_threads``)."""
    backend = check_argument("backend", backend, BACKENDS)
    precision = check_argument("precision", precision, PRECISIONS)
    cpu = device.type == "cpu"
    if backend == "onnxruntime" and not cpu:
        raise UserError(f"backend onnxruntime scores on the CPU: use the CPU as the device, or "
                        f"backend torch on {device}", arg="backend")
    if backend == "onnxruntime" and precision == "bf16":
        raise UserError("backend onnxruntime scores in fp32: precision bf16 is torch's",
                        arg="precision")
    base = _Scorer(model, graphs)
    x = check_batch(model).to(device)
    reference = None
    if (backend, precision) != ("torch", "fp32"):
        out = base.run(x)
        reference = {k: out[k].float().cpu() for k in ("prob", "logit")}
    if precision != "fp32":  # bf16 (asked for), or auto: bf16 where native and close enough
        native = native_bf16() if cpu else ["GPU"]
        if precision == "auto" and (not cpu or not native or backend == "onnxruntime"):
            base.note = ("auto: fp32 on a GPU" if not cpu else "auto: the CPU has no native bf16"
                         if not native else "auto: onnxruntime scores in fp32")
        else:
            bf16 = _Bf16Scorer(model, graphs)
            diff = _largest_difference(bf16, reference, x)
            if precision == "bf16" or diff <= BF16_AUTO_TOLERANCE:
                bf16.note = f"max difference {diff:.1e} from fp32 on a check batch"
                if cpu and not native:
                    bf16.note += "; this CPU has no native bf16: slower than fp32"
                log.info("bf16 scoring (%s): its largest difference from fp32 on a check batch "
                         "of %d is %.2e", ", ".join(native) or "no native bf16", CHECK_BATCH,
                         diff)
                return bf16
            base.note = f"auto: bf16 differs from fp32 by {diff:.3f} on the check batch"
    if backend == "torch" or (backend == "auto" and not cpu):
        return base
    missing = [m for m in ("onnxruntime", "onnx", "onnxscript") if not _importable(m)]
    if missing:
        if backend == "onnxruntime":
            raise UserError(f"backend onnxruntime needs the packages {', '.join(missing)}: "
                            f"pip install {' '.join(missing)}", arg="backend")
        base.note = f"auto: {', '.join(missing)} not installed"
        return base
    try:
        session, path = onnx_session(model, threads)
        ort = _OrtScorer(model, session, path, graphs)
        diff = _largest_difference(ort, reference, x)
        if not diff <= TOLERANCE:
            raise RuntimeError(f"its probabilities differ from eager fp32 by {diff:.2e}")
        ort.note = f"max difference {diff:.1e} from eager fp32 on a check batch"
        return ort
    except Exception as exc:  # noqa: BLE001 - any failure: the eager forward, said
        why = " ".join(str(exc).split())[:200] or type(exc).__name__
        log.warning("onnxruntime not used (%s): the eager forward scores instead", why)
        base.note = f"onnxruntime not used: {why}"
        return base


class ScoringModule(torch.nn.Module):
    """A detector whose plain forward runs on ``scorer`` (``build_scorer``): the logits of its
    backend and precision; asked for its maps (``return_aux``), the detector itself answers. For
    code that calls a model (test.py's evaluation loop)."""

    def __init__(self, model, scorer):
        super().__init__()
        self.model, self.scorer = model, scorer
        self.spec, self.calibration = model.spec, getattr(model, "calibration", None)

    def forward(self, x, return_aux=False):
        if return_aux:
            return self.model(x, return_aux=True)
        return self.scorer(x)["logits"]


def _importable(name):
    import importlib.util
    return importlib.util.find_spec(name) is not None


def set_threads(threads):
    """torch's intra-op threads for this process (None: left as they are)."""
    if threads is not None:
        torch.set_num_threads(int(threads))
