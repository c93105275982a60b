"""Score face images with a trained model (RECCE, or any registered model: the checkpoint says
which).

    python inference.py --bin runs/Recce/<id>/best_model_300.bin --image_folder faces/ --device cpu
    python inference.py -w state_dict.pth -i face.png -s 299 -v --vis_dir vis/

Images are prepared as the checkpoint's model was trained (its saved input spec: size,
normalisation); ``--image_size`` overrides the size. A bare state dict says nothing: the model's
default spec is used and said on one stderr line.

One line per image, in sorted path order, exactly as the original:
    path: <path> \t\t| fake probability: 0.1296 \t| prediction: real

Exit status: 0 when every image was scored, 1 when some could not be read (each is reported on one
stderr line and skipped; the rest are scored), 2 for a usage error (missing folder, empty folder,
missing or wrong checkpoint).

A command line over the Python API, ``faces.api.Predictor`` (``from faces import Predictor``; ``from
inference import Detector`` still gives it, with a deprecation warning): argument parsing, flag
checks, printing, exit codes.

Spread over processes (faces.shard): under ``torchrun`` each rank scores its share of the inputs
on its own device and rank 0 writes the one ``--output`` in the input order; ``--shard K/N`` scores
shard K of N as a separate job and ``--merge`` joins the shards. The rows are kept in
``<output>.parts/`` as they are made: a rerun with the same arguments scores only the rest.
"""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once

from checks import BACKENDS, CROP_RULES, PRECISIONS, default_threads
from checks import MAX_INPUT_SIZE as MAX_IMAGE_SIZE  # noqa: F401 - the one bound of -s
from errors import UserError, flags, run_cli
from faces.arguments import check_keywords
from faces.crop import MARGIN
from faces.finders.base import MIN_FACE_SCORE, MIN_FACE_SIZE
from faces.rules import detector_of
from faces.video import FRAMES
from fileio import check_output_dir, check_output_file, write_table

# The rest of the library (faces.api, faces.media, faces.scoring, model: torch and the models
# under them) is imported where the work starts, not here: ``--help`` and a mistyped flag answer
# at once.
# images per forward pass by default: on a GPU; on the CPU, face crops and faces of videos/photos
BATCH = {"gpu": 32, "crops": 2, "faces": 8}
# the flags of the library's arguments: an error about one names the flag (errors.flags)
FLAGS = {"device": "--device", "model": "--model", "image_size": "--image_size",
         "imports": "--import", "face_detector": "--detector", "source": "--video",
         "metrics": "--threshold_from", "vis_dir": "--vis_dir", "threshold": "--threshold",
         **{name: f"--{name}" for name in ("batch_size", "num_workers", "max_pixels", "frames",
                                           "every", "margin", "min_face_score", "min_face_size",
                                           "backend", "precision", "threads", "crop",
                                           "landmarks")}}
# the flags whose values the API checks (faces.arguments: one rule for the API and the flags)
CHECKED = ("batch_size", "num_workers", "max_pixels", "image_size", "frames", "every", "margin",
           "min_face_score", "min_face_size", "threads")


def __getattr__(name):
    # ``from inference import Detector``: the API's earlier name, faces.api.Predictor
    if name == "Detector":
        import warnings

        from faces.api import Predictor
        warnings.warn("inference.Detector is renamed faces.Predictor (model.Detector is the "
                      "network contract); the old name goes in the next release",
                      DeprecationWarning, stacklevel=2)
        return Predictor
    raise AttributeError(f"module 'inference' has no attribute {name!r}")


def say(line):
    """A result line on stdout in one write: the lines of ranks sharing a console (torchrun runs
    its workers unbuffered) never tear into each other."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def line_for(path, prob, threshold=0.5):
    """The line of a face crop (``faces.scoring.result_line``)."""
    from faces.scoring import prediction, result_line
    return result_line(path, prob, prediction(prob, threshold, path))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Score face images with RECCE (or another model).")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bin", "-b", help="a checkpoint of train.py (or of the original release)")
    src.add_argument("--weight", "-w", help="a bare state dict")
    img = p.add_mutually_exclusive_group(required=True)
    img.add_argument("--image", "-i", help="one image")
    img.add_argument("--image_folder", "-f", help="a folder of images")
    img.add_argument("--video", help="a video file or a folder of videos (faces detected, tracked, "
                                     "cropped as tools/extract_faces.py crops them)")
    m = p.add_argument_group("videos and photos")
    m.add_argument("--detect", action="store_true",
                   help="with --image/--image_folder: the files are photos, not face crops")
    m.add_argument("--crop", default=None, choices=CROP_RULES,
                   help="the crop rule that cuts faces out of videos and photos (default: the "
                        "checkpoint's, else box): deepfakebench, ffpp, recce, box (see "
                        "docs/data.md)")
    m.add_argument("--landmarks", metavar="FILE",
                   help="--crop deepfakebench: dlib's shape predictor (default: the 68-point "
                        "predictor of pip's face-recognition-models)")
    m.add_argument("--detector", default=None,
                   help="face detector: dlib or retinaface (default: the crop rule's; box: dlib)")
    m.add_argument("--detector_weights",
                   help="retinaface: mobilenet0.25_Final.pth or Resnet50_Final.pth")
    m.add_argument("--frames", type=int, default=None,
                   help=f"video: N evenly spaced frames ({FRAMES})")
    m.add_argument("--every", type=int, help="video: every k-th frame")
    m.add_argument("--all_frames", action="store_true", help="video: every frame")
    m.add_argument("--margin", type=float, default=MARGIN,
                   help=f"crop side = margin x the face box ({MARGIN})")
    m.add_argument("--min_face_score", type=float, default=None,
                   help="detections scored lower are not faces ("
                        + ", ".join(f"{k} {v}" for k, v in MIN_FACE_SCORE.items()) + ")")
    m.add_argument("--min_face_size", type=int, default=MIN_FACE_SIZE,
                   help=f"boxes with a shorter side in pixels are not faces ({MIN_FACE_SIZE})")
    m.add_argument("--frames_output", help="one row per scored face in a frame (.csv)")
    m.add_argument("--threshold_from", help="use the EER threshold of a test.py metrics.json "
                                            "(instead of --threshold)")
    p.add_argument("--device", "-d", default=None,
                   help="cpu, cuda, cuda:0 ... (default: cuda:0 if available)")
    p.add_argument("--image_size", "-s", type=int, default=None,
                   help="input size (default: the one the checkpoint was trained with)")
    p.add_argument("--visualize", "-v", action="store_true",
                   help="write PNGs into --vis_dir: the face, its reconstruction and their "
                        "difference (detectors that reconstruct) and Grad-CAM (with grad-cam "
                        "installed)")
    p.add_argument("--vis_dir", default="vis", help="folder for --visualize (default: vis)")
    p.add_argument("--batch_size", type=int, default=None,
                   help=f"images per forward pass (default: {BATCH['gpu']} on a GPU; on the CPU "
                        f"{BATCH['crops']} face crops, {BATCH['faces']} faces of videos and "
                        "photos)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="processes decoding the image files of face crops (default: 2 on the "
                        "CPU, 4 on a GPU)")
    p.add_argument("--recursive", action="store_true", help="also score images in sub-folders")
    p.add_argument("--backend", default="torch", choices=BACKENDS,
                   help="what runs the forward: torch (default), onnxruntime (the CPU, the "
                        "checkpoint's ONNX export, cached), auto (onnxruntime on the CPU where "
                        "installed)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="fp32 (default), bf16 (autocast), auto (bf16 where the CPU has native "
                        "bf16 and it stays close to fp32 on a check batch)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of torch and onnxruntime (default: the cores this "
                        "process may use, shared among torchrun's ranks of the machine)")
    p.add_argument("--eager", action="store_true",
                   help="GPU: run the plain forward instead of replaying CUDA graphs")
    p.add_argument("--threshold", default=None,
                   help="fake when the probability is at or above this: a number in [0, 1], or an "
                        "operating point of the checkpoint's calibration: fpr@0.01, fpr@0.05, "
                        "fpr@0.1 (at most that share of the validation's real frames, or real "
                        "videos for --video, called fake) or eer (default: 0.5); or two as an "
                        "uncertain band a:b, e.g. eer:fpr@0.01 (real below the lower, fake at "
                        "or above the upper, uncertain between)")
    p.add_argument("--output", help="also write the results to a .csv or .json file")
    p.add_argument("--num_classes", type=int, choices=(1, 2), default=None,
                   help="logits of the model (default: read from the checkpoint)")
    p.add_argument("--model", default=None,
                   help="the model of a bare state dict (default: the checkpoint's config says; "
                        "RECCE for state dicts)")
    p.add_argument("--max_pixels", type=int, default=None,
                   help="refuse images with more pixels than this (default 64 million)")
    p.add_argument("--trust", action="store_true",
                   help="allow a checkpoint that needs full unpickling (only from a trusted "
                        "source)")
    p.add_argument("--shard", metavar="K/N",
                   help="score shard K of N of the inputs, its rows kept beside --output (array "
                        "jobs; under torchrun the ranks split by themselves)")
    p.add_argument("--merge", action="store_true",
                   help="join the rows of every shard into --output")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module or .py file registering your own detector (as config.imports); "
                        "repeatable")
    return p.parse_args(argv)


def checkpoint_path(args):
    path = args.bin or args.weight
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    return path


def predictor_from_args(args, media=False):
    """The API's Predictor (see ``_predictor``), its threshold and probabilities said once on
    stderr."""
    det = _predictor(args, media)
    if getattr(args, "threshold_source", None):
        det.threshold_source = det.band.source = det.video_band.source = args.threshold_source
    print(det.describe_threshold("video" if getattr(args, "video", None) else "frame"),
          file=sys.stderr)
    if (det.backend, det.precision) != ("torch", "fp32") or det.forward.note:
        print(f"scored by: {det.forward.describe()}", file=sys.stderr)
    return det


def _predictor(args, media=False):
    """The API's Predictor from the command line's options. Batch: --batch_size, else ``BATCH``
    (on the CPU: face crops, or the faces of videos and photos with ``media``); decoding workers:
    --num_workers, else 2 on the CPU, 4 on a GPU."""
    from faces.api import Predictor
    from model.checkpoint import pick_device
    device = pick_device(args.device)
    cpu = device.type != "cuda"
    return Predictor.from_checkpoint(
        checkpoint_path(args), device, trust=args.trust, model=args.model,
        num_classes=args.num_classes, image_size=args.image_size, imports=args.imports,
        threshold=args.threshold, max_pixels=args.max_pixels, graphs=not args.eager,
        backend=args.backend, precision=args.precision,
        threads=args.threads if args.threads is not None else default_threads(
            0, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)),
        batch_size=args.batch_size if args.batch_size is not None else
        BATCH["gpu" if not cpu else "faces" if media else "crops"],
        num_workers=args.num_workers if args.num_workers is not None else (2 if cpu else 4))


def score(args, det=None, job=None):
    """Face crops: yields (path, probability or None, error, raw probability or None) in sorted
    path order, streaming; ``det``: the Predictor (default: made from ``args``); ``job``: a
    sharded run's share only."""
    from faces.api import list_images
    det = det or predictor_from_args(args)
    paths = list_images(args.image, args.image_folder, args.recursive)
    vis_dir = args.vis_dir if args.visualize else None
    root = os.path.dirname(paths[0]) if args.image else args.image_folder
    names = [os.path.relpath(p, root).replace(os.sep, "__") for p in paths]
    if job:  # a sharded run: this process's share, less what is done
        keep = job.take(paths)
        paths, names = [paths[k] for k in keep], [names[k] for k in keep]
    for i, prob, err, raw in det.score_items(paths, names, vis_dir):
        yield paths[i], prob, err, raw


def check_arguments(args):
    """The flags, each on its own and together, before any work: the values the API takes by the
    API's own rule (``faces.arguments``; its errors name the flag under ``flags(**FLAGS)``), the
    rest here."""
    if args.threshold is not None:  # first, as the API checks its keywords
        from model.calibration import parse_threshold
        if args.threshold_from:
            raise UserError("--threshold and --threshold_from both set the threshold: give one")
        chosen = parse_threshold(args.threshold, typed=True)  # its errors name the flag (FLAGS)
        if isinstance(chosen, float):
            args.threshold = chosen
    if args.output and not args.output.lower().endswith((".csv", ".json")):
        raise UserError(f"--output {args.output}: use a .csv or .json file name")
    check_keywords(**{name: getattr(args, name) for name in CHECKED
                      if getattr(args, name) is not None})
    if sum([args.frames is not None, args.every is not None, args.all_frames]) > 1:
        raise UserError("--frames, --every and --all_frames each choose the frames: give one")
    if args.frames_output and not args.frames_output.lower().endswith(".csv"):
        raise UserError(f"--frames_output {args.frames_output}: use a .csv file name")
    if args.output and args.frames_output and \
            os.path.abspath(args.output) == os.path.abspath(args.frames_output):
        raise UserError(f"--output and --frames_output are both {args.output}: give two files")
    if args.frames_output and not (args.video or args.detect):
        raise UserError("--frames_output lists the faces found in videos and photos: use it "
                        "with --video or --detect")
    if (args.crop or args.landmarks) and not (args.video or args.detect):
        raise UserError(f"{'--crop' if args.crop else '--landmarks'} chooses how faces are cut out "
                        "of videos and photos: use it with --video or --detect")
    for name in ("output", "frames_output"):
        if getattr(args, name):
            check_output_file(getattr(args, name), f"--{name}")
    if args.visualize:
        check_output_dir(args.vis_dir, "--vis_dir")


def score_media(args, job=None):
    """--video, or --detect with --image/--image_folder: faces found, tracked, cropped, scored."""
    from faces import media
    from faces.api import list_images
    from faces.finders import FACE_FINDERS
    from faces.video import list_videos
    checkpoint_path(args)
    items = list_videos(args.video) if args.video else \
        list_images(args.image, args.image_folder, args.recursive)
    if args.detector is not None:
        FACE_FINDERS.get(args.detector)
    det = predictor_from_args(args, media=True)
    rule = args.crop or det.face_crop
    detector = detector_of(rule, args.detector)
    if detector == "retinaface" and not args.detector_weights:
        raise UserError(f"--detector retinaface (the {rule} crop rule's) needs --detector_weights "
                        "FILE" + (" (or use --detector dlib)" if rule == "box" else ""))
    det.cutting(args.crop, args.detector, args.detector_weights, args.margin, args.landmarks,
                args.min_face_score)  # their errors before the work
    print(f"faces cut by the {rule} crop rule" + (
        " (given)" if args.crop else " (the checkpoint's)"
        if getattr(det.model, "face_crop", None) else " (the checkpoint names none)"),
        file=sys.stderr)
    vis_dir = args.vis_dir if args.visualize else None
    stems = [os.path.splitext(os.path.basename(i))[0] for i in items]
    options = dict(face_detector=args.detector, detector_weights=args.detector_weights,
                   vis_dir=vis_dir, margin=args.margin, min_face_score=args.min_face_score,
                   min_face_size=args.min_face_size, crop=args.crop, landmarks=args.landmarks)
    results, failed = [], 0
    todo = {items[k] for k in job.take(items)} if job else None
    for item, stem in zip(items, stems):
        if todo is not None and item not in todo:
            continue
        # two inputs of one stem (a.mp4, a.avi) get their pictures under their full names
        name = stem if stems.count(stem) == 1 else os.path.basename(item).replace(".", "_")
        if args.video:
            r = det.score_video(item, frames=args.frames, every=args.every,
                                all_frames=args.all_frames, name=name, **options)
        else:
            r = det.score_photo(item, name=name, **options)
        results.append(r)
        if r.error:
            failed += 1
            print(f"skipped {item}: {r.error}", file=sys.stderr)
        else:
            failed += r.score is None or r.warning is not None
            say(media.result_line(r))
            if r.warning:
                print(f"warning: {item}: {r.warning}", file=sys.stderr)
        if job:
            job.add(item, media.record(r), r.error or r.score is None or r.warning is not None)
    if job:
        return 0
    if args.output:
        media.write_results(args.output, results)
    if args.frames_output:
        media.write_frames(args.frames_output, results)
    say_written(args, args.visualize)
    return 1 if failed else 0


def score_crops(args, job=None):
    """Face crops (--image / --image_folder): one line each, in sorted path order."""
    from faces.api import list_images
    from faces.scoring import CROP_COLUMNS, crop_record
    checkpoint_path(args)
    list_images(args.image, args.image_folder, args.recursive)  # its errors before the model's
    det = predictor_from_args(args)
    rows, failed = [], 0
    for path, prob, err, raw in score(args, det, job):
        if err:
            failed += 1
            print(f"skipped {path}: {err}", file=sys.stderr)
        else:
            say(line_for(path, prob, det.band))
        if args.output:
            rows.append(crop_record(path, prob, err, det.band, raw, None,
                                    det.backend, det.precision))
            if job:
                job.add(path, rows[-1], err)
    if job:
        return 0
    if args.output:
        write_table(args.output, sorted(rows, key=lambda r: r["path"]), CROP_COLUMNS)
    sys.stdout.flush()
    say_written(args, args.visualize)
    return 1 if failed else 0


def say_written(args, pictures):
    """One stderr line naming every file or folder written (stdout keeps one line per input)."""
    written = [p for p in (args.output, args.frames_output) if p]
    if pictures:
        written.append(f"{args.vis_dir}{os.sep}")
    if written:
        print(f"written: {', '.join(written)}", file=sys.stderr)


# flags that do not change a row: a sharded run resumed with other values of these goes on
UNKEYED = ("device", "batch_size", "num_workers", "threads", "eager", "visualize", "vis_dir",
           "output", "frames_output", "shard", "merge", "trust", "bin", "weight", "image",
           "image_folder", "video")


def sharded(args):
    """The job of a sharded run (``faces.shard``: torchrun, ``--shard K/N``), None otherwise."""
    from faces.shard import scoring_job
    return scoring_job(args, lambda: shard_key(args), lambda rows: write_rows(args, rows), FLAGS)


def merged(args):
    """--merge: the rows of every shard into --output; returns the exit status."""
    from faces.api import list_images
    from faces.shard import merge_scores
    from faces.video import list_videos
    items = list_videos(args.video) if args.video else \
        list_images(args.image, args.image_folder, args.recursive)
    return merge_scores(args.output, shard_key(args), items, lambda rows: write_rows(args, rows))


def shard_key(args):
    """What makes the rows of a sharded run: the checkpoint file, the inputs, every flag that
    changes a row (``fileio.same_work`` refuses to mix rows of other work)."""
    from fileio import file_identity
    key = {k: v for k, v in sorted(vars(args).items()) if k not in UNKEYED}
    key.update(checkpoint=file_identity(checkpoint_path(args)),
               inputs=os.path.abspath(args.image or args.image_folder or args.video))
    return key


def write_rows(args, rows):
    """The --output file of a sharded run from the rows of every shard, as one process writes it."""
    from faces.media import MEDIA_COLUMNS
    from faces.scoring import CROP_COLUMNS
    if args.video or args.detect:
        write_table(args.output, rows, MEDIA_COLUMNS)
    else:
        write_table(args.output, sorted(rows, key=lambda r: r["path"]), CROP_COLUMNS)


def main(argv=None):
    args = parse_args(argv)

    def body():
        with flags(**FLAGS):
            check_arguments(args)
            if args.threshold_from:
                from faces.media import threshold_from
                args.threshold = threshold_from(args.threshold_from)
                args.threshold_source = f"EER threshold of {args.threshold_from}"
            job = sharded(args)
            if job is None and not args.merge:
                return score_media(args) if args.video or args.detect else score_crops(args)
            status = merged(args) if args.merge else job.run(
                lambda: score_media(args, job) if args.video or args.detect else
                score_crops(args, job))
            if args.merge or job.plan.merges:
                say_written(args, args.visualize)
            return status
    return run_cli(body, "interrupted: the lines above were scored; no output file was written")


if __name__ == "__main__":
    from faces.shard import exit_process
    exit_process(main())  # sys.exit, but for a torchrun rank
