"""Export a trained model (RECCE or any registered model) to ONNX (dynamic batch) or a torch.export program, and check it.

    python tools/export.py --bin runs/Recce/<id>/best_model_300.bin --format onnx --out recce.onnx
    python tools/export.py --bin C --format onnx --with-recons --out recce_recons.onnx
    python tools/export.py --bin C --format torch.export --out recce.pt2

The exported model is compared with the eager one on a random batch (ONNX through onnxruntime when
it is installed); the tool fails if they differ by more than 1e-4. ONNX export needs the `onnx`
and `onnxscript` packages (requirements-dev.txt), which users who do not export can skip.
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402

from errors import UserError, run_cli  # noqa: E402

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
    import_modules(list(imports), where="--import")
    model = load_detector(path, "cpu", trusted=trusted, num_classes=num_classes, name=model_name)
    model.channels_last = False  # a plain NCHW graph exports and runs everywhere
    return model.to(memory_format=torch.contiguous_format).eval()


def export(model, fmt, out, size=None, with_recons=False):
    """Write the exported model to ``out``; returns the largest difference from eager (NaN
    counts as a failure). The example input has the checkpoint's input size (``size`` overrides)."""
    h, w = (size, size) if size else model.spec.size
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
        names = ["logits", "recons"] if with_recons else ["logits"]
        program = torch.onnx.export(wrapper, (example,), dynamo=True, input_names=["image"],
                                    output_names=names, dynamic_shapes={"x": {0: batch}})
        program.save(out)
        try:
            import onnxruntime as ort
        except ImportError:
            print("onnxruntime is not installed: the ONNX file was not checked", file=sys.stderr)
            return None
        session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        got = session.run(None, {"image": check.numpy()})
        got = [torch.from_numpy(g) for g in got]
    elif fmt == "torch.export":
        program = torch.export.export(wrapper, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, out)
        loaded = torch.export.load(out).module()
        with torch.no_grad():
            got = loaded(check)
        got = list(got) if isinstance(got, (tuple, list)) else [got]
    else:
        raise UserError(f"--format: {fmt!r} is not onnx or torch.export")
    diffs = [float((g - e).abs().max()) for g, e in zip(got, expected)]
    return float("nan") if any(d != d for d in diffs) else max(diffs)


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
        model = load_for_export(args.bin, args.trust, args.num_classes, args.model, args.imports)
        diff = export(model, args.format, args.out, args.size, args.with_recons)
        if diff is not None:
            print(f"{args.out}: max |exported - eager| = {diff:.2e} (tolerance {TOLERANCE:.0e})")
            if not diff <= TOLERANCE:
                print("error: the exported model disagrees with the eager one", file=sys.stderr)
                return 1
        return 0
    return run_cli(body)


if __name__ == "__main__":
    sys.exit(main())
