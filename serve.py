"""A local web page over the Python API: drop photos and videos, follow their scoring, read the
verdicts and their evidence, keep a history, download reports.

    python serve.py                                   # the newest best checkpoint under runs/
    python serve.py --checkpoint runs/Recce/<id>/best_model_150.bin --port 8080
    python serve.py --host 0.0.0.0 --token SECRET     # other machines: only with a token

The page and its HTTP API (FastAPI; /docs, /openapi.json) are served by uvicorn; jobs are scored
by worker processes (``--workers``, the model loaded once in each), their uploads and outputs kept
in ``--data`` (one folder per job, named by its id) with the history in a SQLite file there.
Needs requirements-serve.txt. See docs/serve.md.
"""
import argparse
import glob
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

from checks import BACKENDS, PRECISIONS
from errors import UserError, flags, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="A local web page for verdicts on photos and videos.")
    p.add_argument("--checkpoint", help="the detector's checkpoint (default: the newest best "
                                        "checkpoint under runs/)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; "
                                                       "any other needs --token)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--data", default="serve_data",
                   help="folder of the jobs: uploads, outputs, the history (default serve_data)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes scoring jobs at once, each with the model (default 1)")
    p.add_argument("--token", help="required of every request (for a non-loopback --host)")
    p.add_argument("--max_upload_mb", type=float, default=500,
                   help="largest upload in MB (default 500)")
    p.add_argument("--max_seconds", type=float, default=600,
                   help="longest video in seconds (default 600)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:0 ...")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="what runs the forward (as inference.py's --backend)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default), bf16, auto (as inference.py's --precision)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of each worker's forward (default: the cores the "
                        "server may use, shared among its --workers)")
    p.add_argument("--model", default=None,
                   help="the detector of a bare state dict (as inference.py's --model)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module or .py file registering your own detector; repeatable")
    p.add_argument("--trust", action="store_true",
                   help="allow a checkpoint that needs full unpickling (only a trusted one)")
    p.add_argument("--detector_weights",
                   help="RetinaFace weights: offers the retinaface face detector on the page")
    return p.parse_args(argv)


def newest_checkpoint(root="runs"):
    """The newest ``best_model_<step>.bin`` of any run under ``root`` (by modification time)."""
    found = glob.glob(os.path.join(root, "*", "*", "best_model_*.bin"))
    from trainer.checkpoint import newest_best
    best = {newest_best(os.path.dirname(p)) for p in found}
    best.discard(None)
    return max(best, key=os.path.getmtime) if best else None


def check_args(args):
    from webapp.app import is_loopback
    if not is_loopback(args.host) and not args.token:
        raise UserError(f"--host {args.host}: a non-loopback address needs --token (without it "
                        "anyone on the network could use the page)")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port}: expected 1 to 65535")
    if args.workers < 1 or args.workers > 64:
        raise UserError(f"--workers {args.workers}: expected 1 to 64")
    for name in ("max_upload_mb", "max_seconds"):
        value = getattr(args, name)
        if not 0 < value < float("inf"):
            raise UserError(f"--{name} {value}: expected a positive number")
    from checks import check_value
    check_value("--threads", args.threads, "threads?")
    if args.token is not None and len(args.token) < 8:
        raise UserError("--token: at least 8 characters")
    if os.path.exists(args.data) and not os.path.isdir(args.data):
        raise UserError(f"--data {args.data}: not a folder")


def model_info(predictor, checkpoint):
    """What /api/model says of the loaded detector: ``checkpoint`` the path as it was given
    (shown so on the page and in the reports), ``checkpoint_path`` the file's absolute path."""
    m = predictor.model
    spec = predictor.spec
    return {"detector": getattr(m, "name", None) or type(m).__name__,
            "checkpoint": os.fspath(checkpoint), "checkpoint_path": os.path.abspath(checkpoint),
            "checkpoint_kind": getattr(m, "spec_source", None),
            "uses_ema": getattr(m, "uses_ema", None),
            "input_spec": {"size": list(spec.size), "mean": list(spec.mean), "std": list(spec.std)},
            "threshold": predictor.threshold,
            "backend": predictor.backend, "precision": predictor.precision,
            "calibration": getattr(predictor, "calibration", None),
            "face_crop": predictor.face_crop}


def main(argv=None):
    args = parse_args(argv)

    def body():
        check_args(args)
        try:
            import fastapi  # noqa: F401 - imported to check it is installed
            import fastapi_offline  # noqa: F401 - the files of /docs, served locally
            import multipart  # noqa: F401 - imported to check it is installed
            import uvicorn
        except ImportError as exc:
            raise UserError(f"the page needs {exc.name}: pip install -r requirements-serve.txt") \
                from None
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = newest_checkpoint()
            if ckpt is None:
                raise UserError("no checkpoint under runs/: run `python train.py` first (or give "
                                "--checkpoint FILE)")
            print(f"checkpoint: {ckpt} (the newest best checkpoint under runs/)", flush=True)
        if not os.path.isfile(ckpt):
            raise UserError(f"--checkpoint {ckpt}: no such file")
        from fileio import FolderLock
        os.makedirs(args.data, exist_ok=True)
        lock = FolderLock(args.data, "--data", "give another --data")  # one server per folder
        from checks import default_threads
        from faces.api import Predictor
        from webapp.app import create_app
        from webapp.pool import Workers
        from webapp.store import JobStore
        threads = args.threads if args.threads is not None else default_threads(0, args.workers)
        load = {"model": args.model, "imports": list(args.imports), "trust": args.trust,
                "backend": args.backend, "precision": args.precision, "threads": threads}
        with flags(model="--model", imports="--import", device="--device", backend="--backend",
                   precision="--precision", threads="--threads"):
            info = model_info(Predictor.from_checkpoint(ckpt, args.device, **load), ckpt)
        store = JobStore(args.data)
        detectors = ("dlib", "retinaface") if args.detector_weights else ("dlib",)
        app = create_app(store, info, token=args.token, host=args.host,
                         max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                         detectors=detectors)
        if app.state.interrupted:
            print(f"{app.state.interrupted} job(s) interrupted by the last stop: marked "
                  "interrupted (run again from the page)", flush=True)
        workers = Workers(store, ckpt, {"device": args.device, "load": load,
                                        "detector_weights": args.detector_weights},
                          info, args.workers)
        app.state.workers = workers
        workers.start()
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"serving http://{shown}:{args.port}/  (data: {store.data}; Ctrl-C stops)",
              flush=True)
        try:
            uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        finally:
            workers.stop()
            lock.release()
    return run_cli(body, "stopped")


if __name__ == "__main__":
    sys.exit(main())
