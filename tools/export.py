"""Export a trained model (RECCE or any registered model) to ONNX (dynamic batch) or a torch.export
program, and check it.

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

import torch

from checks import check_value
from errors import UserError, run_cli
from model.export import TOLERANCE, export


def load_for_export(path, trusted=False, num_classes=None, model_name=None, imports=()):
    from model.checkpoint import load_detector
    from registry import import_modules
    import_modules(imports, where="--import")
    model = load_detector(path, "cpu", trusted=trusted, num_classes=num_classes, name=model_name)
    model.channels_last = False  # a plain NCHW graph exports and runs everywhere
    return model.to(memory_format=torch.contiguous_format).eval()


def main(argv=None):
    p = argparse.ArgumentParser(description="Export a RECCE checkpoint.")
    p.add_argument("--bin", "-b", required=True,
                   help="checkpoint (train.py, original, or state dict)")
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
