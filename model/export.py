"""Export a detector to ONNX (dynamic batch) or a torch.export program, checked against its eager
forward before the file appears: ``tools/export.py`` on the command line, and the ONNX Runtime
backend of scoring (``model.backends``)."""
import os
import sys

import torch

from checks import check_value
from errors import UserError
from fileio import publish, temporary_beside

TOLERANCE = 1e-4


class _Exportable(torch.nn.Module):
    """Plain tensor outputs (ONNX and torch.export take no dicts): logits, optionally recons."""

    def __init__(self, model, with_recons):
        super().__init__()
        if with_recons and not model.has_reconstruction:
            raise UserError(f"--with-recons: {type(model).__name__} has no reconstruction")
        self.model = model
        self.with_recons = with_recons

    def forward(self, x):
        out = self.model(x, return_aux=self.with_recons)
        return (out["logits"], out["recons"]) if self.with_recons else out


def onnx_metadata(model, size, with_recons, checkpoint=None):
    """What an exported ONNX file says about itself (``metadata_props``): its input spec, what
    its outputs mean, and where it came from."""
    import json

    from version import project_version
    spec = model.spec
    two = getattr(model, "num_classes", 1) == 2
    meta = {
        "model": type(model).__name__,
        "input": "image: N x 3 x H x W float32, RGB channel order",
        "input_size": json.dumps(list(size)),  # [height, width]
        "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
        "max_pixel_value": json.dumps(spec.max_pixel_value),
        "interpolation": spec.interpolation,
        "preprocessing": "resize the RGB face crop to input_size (a stretch, no crop) with "
                         "interpolation, then (pixel / max_pixel_value - mean) / std per channel",
        "output_logits": ("N x 2 logits (real, fake): p_fake = softmax(logits)[:, 1]" if two else
                          "N x 1: the logit of 'fake': p_fake = sigmoid(logits[:, 0])"),
        "project_version": project_version(),
    }
    if with_recons:
        meta["output_recons"] = "N x 3 x H x W reconstruction, on the normalised input's scale"
    if checkpoint:
        meta["checkpoint"] = os.path.basename(checkpoint)
    return meta


def _save_onnx(program, path, metadata):
    import onnx
    program.save(path)
    proto = onnx.load(path)
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, path)


def export(model, fmt, out, size=None, with_recons=False, checkpoint=None, quiet=False):
    """Export, check against eager on another batch size, and only then put the file at ``out``
    (atomically: an interruption or a failed check leaves a previous file there as it was).
    Returns the largest difference from eager (NaN counts as a failure; None when onnxruntime is
    missing and the ONNX file could not be checked). The example input has the checkpoint's input
    size (``size`` overrides); ``quiet``: the exporter's own progress lines are not printed."""
    if fmt not in ("onnx", "torch.export"):
        raise UserError(f"--format: {fmt!r} is not onnx or torch.export")
    if size is not None:
        size = check_value("--size", size, "size")
    h, w = (size, size) if size is not None else model.spec.size
    if min(h, w) < model.min_input_size:
        raise UserError(f"--size {min(h, w)}: the model needs inputs of at least "
                        f"{model.min_input_size}")
    wrapper = _Exportable(model, with_recons).eval()
    example = torch.rand(2, 3, h, w) * 2 - 1
    check = torch.rand(3, 3, h, w) * 2 - 1  # another batch size: the batch axis is dynamic
    with torch.no_grad():
        expected = wrapper(check)
    expected = expected if isinstance(expected, tuple) else (expected,)
    batch = torch.export.Dim("batch", min=1, max=1024)
    if fmt == "onnx":
        try:
            import onnx  # noqa: F401 - imported to check it is installed
            import onnxscript  # noqa: F401 - imported to check it is installed
        except ImportError:
            raise UserError("ONNX export needs the packages onnx and onnxscript: pip install "
                            "onnx onnxscript (onnxruntime to check the result)") from None
    with temporary_beside(out) as tmp:
        if fmt == "onnx":
            names = ["logits", "recons"] if with_recons else ["logits"]
            import contextlib
            import io
            hush = contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext()
            with hush:
                program = torch.onnx.export(wrapper, (example,), dynamo=True,
                                            input_names=["image"], output_names=names,
                                            dynamic_shapes={"x": {0: batch}},
                                            verbose=False if quiet else None)
            _save_onnx(program, tmp, onnx_metadata(model, (h, w), with_recons, checkpoint))
            try:
                import onnxruntime as ort
            except ImportError:
                print("onnxruntime is not installed: the ONNX file was not checked",
                      file=sys.stderr)
                publish(tmp, out)
                return None
            session = ort.InferenceSession(tmp, providers=["CPUExecutionProvider"])
            got = [torch.from_numpy(g) for g in session.run(None, {"image": check.numpy()})]
        else:
            program = torch.export.export(wrapper, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, tmp)
            with torch.no_grad():
                got = torch.export.load(tmp).module()(check)
            got = list(got) if isinstance(got, (tuple, list)) else [got]
        diffs = [float((g - e).abs().max()) for g, e in zip(got, expected)]
        diff = float("nan") if any(d != d for d in diffs) else max(diffs)
        if diff <= TOLERANCE:
            publish(tmp, out)
        return diff
