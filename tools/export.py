"""Export a trained model (RECCE or any registered model) to ONNX (dynamic batch) or a torch.export program, and check it.

    python tools/export.py --bin runs/Recce/<id>/best_model_300.bin --format onnx --out recce.onnx
    python tools/export.py --bin C --format onnx --with-recons --out recce_recons.onnx
    python tools/export.py --bin C --format torch.export --out recce.pt2

The exported model is compared with the eager one on a random batch (ONNX through onnxruntime when
it is installed); the tool fails if they differ by more than 1e-4, and then writes nothing. The
file appears at --out only when complete and checked (a previous file there is replaced
atomically). An ONNX file carries its input spec, the meaning of its outputs and the project
version as metadata (``metadata_props``). ONNX export needs the `onnx`
and `onnxscript` packages (requirements-dev.txt), which users who do not export can skip.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from checks import check_value  # noqa: E402
from errors import UserError, run_cli  # noqa: E402
from fileio import publish, temporary_beside  # noqa: E402

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


def load_for_export(path, trusted=False, num_classes=None, model_name=None, imports=()):
    from model.checkpoint import load_detector
    from registry import import_modules
    import_modules(imports, where="--import")
    model = load_detector(path, "cpu", trusted=trusted, num_classes=num_classes, name=model_name)
    model.channels_last = False  # a plain NCHW graph exports and runs everywhere
    return model.to(memory_format=torch.contiguous_format).eval()


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


def export(model, fmt, out, size=None, with_recons=False, checkpoint=None):
    """Export, check against eager on another batch size, and only then put the file at ``out``
    (atomically: an interruption or a failed check leaves a previous file there as it was).
    Returns the largest difference from eager (NaN counts as a failure; None when onnxruntime is
    missing and the ONNX file could not be checked). The example input has the checkpoint's input
    size (``size`` overrides)."""
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
            import onnx  # noqa: F401
            import onnxscript  # noqa: F401
        except ImportError:
            raise UserError("ONNX export needs the packages onnx and onnxscript: "
                            "pip install onnx onnxscript (onnxruntime to check the result)") from None
    with temporary_beside(out) as tmp:
        if fmt == "onnx":
            names = ["logits", "recons"] if with_recons else ["logits"]
            program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["image"],
                                        output_names=names, dynamic_shapes={"x": {0: batch}})
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


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a RECCE checkpoint.")
    p.add_argument("--bin", "-b", required=True, help="checkpoint (train.py, original, or state dict)")
    p.add_argument("--format", choices=["onnx", "torch.export"], default="onnx")
    p.add_argument("--out", required=True)
    p.add_argument("--size", "--image_size", "-s", dest="size", type=int, default=None,
                   help="example input side (default: the size the checkpoint was trained at)")
    p.add_argument("--with-recons", action="store_true", help="also output the reconstruction")
    p.add_argument("--num_classes", type=int, choices=(1, 2), default=None)
    p.add_argument("--model", default=None, help="the model of a bare state dict")
    p.add_argument("--trust", action="store_true")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module or .py file registering your own detector; repeatable")
    args = p.parse_args(argv)
    from fileio import check_output_file

    def body():
        check_output_file(args.out, "--out")
        if args.size is not None:
            check_value("--size", args.size, "size")  # before the checkpoint is read
        if os.path.exists(args.out) and os.path.exists(args.bin) and \
                os.path.samefile(args.out, args.bin):
            raise UserError(f"--out {args.out} is the checkpoint itself: choose another file")
        model = load_for_export(args.bin, args.trust, args.num_classes, args.model, args.imports)
        diff = export(model, args.format, args.out, args.size, args.with_recons, args.bin)
        if diff is not None:
            print(f"{args.out}: max |exported - eager| = {diff:.2e} (tolerance {TOLERANCE:.0e})")
            if not diff <= TOLERANCE:
                print(f"error: the exported model disagrees with the eager one; {args.out} was "
                      "not written", file=sys.stderr)
                return 1
        return 0
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
