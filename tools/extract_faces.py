"""Crop faces from videos into the folders the dataset loaders read.

    python tools/extract_faces.py --input FF++/original_sequences/youtube/c23/videos \
        --out FF++/original_sequences/youtube/c23/images --frames 50 --detector retinaface \
        --weights Resnet50_Final.pth
    python tools/extract_faces.py --input videos.txt --out faces --detector dlib --every 10

``--crop deepfakebench | ffpp | recce | box`` cuts faces by a named crop rule (faces.rules,
docs/data.md#crop-rules): its reference's detector, face, geometry, frames and drop rule;
``deepfakebench`` writes DeepfakeBench's tree (``frames/``, ``landmarks/``). ``--frames_real N
--frames_fake M``: frames per video by label (the original authors' 50 and 12.5).

Writes ``<out>/<video id>/<frame:04d>.png`` (or ``.jpg`` with ``--format jpg --quality Q``, which
decodes several times faster when training at GPU speed; the loaders read either) (the video id is
the file name without extension, the frame number that of the video). Frames: N evenly spaced
(``--frames``, default 32), every k-th (``--every``) or all (``--all``). Face: the largest, then
followed across the video's frames (the detection that overlaps the previous face most). Crop: a
square around the box scaled by ``--margin`` (default 1.3), clipped to the frame, optionally resized
(``--size``). Videos run in parallel worker processes. A finished video gets a marker written
atomically after its last frame and is skipped on the next run; an interrupted one is redone. A
broken video is logged and skipped.

Beside the crops: ``manifest.jsonl`` (one line per crop: video, file, frame index, time, the
video's frame count, detector box, crop rectangle, detector score, landmarks where the detector
gives them) and ``manifest_meta.json`` (detector, backbone, weights sha256, margin, size, frames
policy, format, project and OpenCV versions). ``--from_manifest FILE --input VIDEOS --out DIR``
re-crops exactly those frames and rectangles from your own copy of the videos, without running a
detector, and reports every frame it cannot reproduce (video missing, frame count differs, frame
not decodable): a shared manifest gives the same crops where the video decoder agrees.

Nothing of the user's is deleted: a video's output folder is made by this tool and marked as its
own (``.extracting`` while at work, ``.done`` when finished); only such a folder's own frame files
are ever removed (to redo an interrupted video), and a folder of that name that the tool did not
make is left alone, the video reported as failed. Two videos whose names differ only by extension
would share one folder: refused before any work.

Spread over processes (faces.shard): ``torchrun --nproc_per_node N [--nnodes M ...]
tools/extract_faces.py ...`` gives each rank a share of the videos (by size), its own GPU with
``--device cuda``, and rank 0 writes the one ``manifest.jsonl`` when every rank has finished;
``--shard K/N`` runs shard K of N as a separate job, and ``--merge`` writes the manifest when every
shard has finished. Reruns resume by video whatever the number of shards.
"""
import argparse
import logging
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # waiting threads sleep: see train.py

from checks import MAX_FRAMES, check_value
from errors import UserError, flags, run_cli
from faces.crop import MARGIN
from faces.extract import crop_settings, extract, per_label_frames, recrop
from faces.finders import FACE_FINDERS
from faces.finders.retinaface import RetinaFaceNet, backbone_of, load_retinaface_weights
from faces.manifest import MANIFEST, write_meta
from faces.rules import CROP_RULES, RULES, detector_of
from faces.shard import extract_share, merge_extraction, plan_from, rank_device
from faces.video import FRAMES, list_videos

# the flags of the library's arguments (their errors name them)
FLAGS = {"source": "--input", "out": "--out", "manifest": "--from_manifest",
         "face_detector": "--detector", "landmarks": "--landmarks",
         "frames_real": "--frames_real"}


def check_arguments(args):
    # frames, margins and sizes by the bounds of every door (checks.py: inference.py's alike)
    for name, kind in (("frames", "frames?"), ("every", "frames?"), ("size", "size?"),
                       ("workers", "posint"), ("margin", "margin")):
        check_value(f"--{name}", getattr(args, name), kind)
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality {args.quality}: expected 1 to 100")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise UserError(f"--out {args.out}: is a file, expected a folder")
    for name in ("frames_real", "frames_fake"):
        value = getattr(args, name)
        if value is not None and not (math.isfinite(value) and 0 < value <= MAX_FRAMES):
            raise UserError(f"--{name} {value}: expected a number of frames above 0")
        if value is not None and (args.every or args.all):
            raise UserError(f"--{name} and --{'every' if args.every else 'all'} both choose the "
                            "frames of a video: give one")
    if args.landmarks is not None and not RULES[args.crop].aligned:
        raise UserError(f"--landmarks: the {args.crop} crop rule does not align faces "
                        "(--crop deepfakebench does)")


def main(argv=None):
    p = argparse.ArgumentParser(description="Crop faces from videos.")
    p.add_argument("--input", required=True, help="a folder of videos or a text file of paths")
    p.add_argument("--out", required=True, help="writes <out>/<video id>/<frame:04d>.png")
    p.add_argument("--crop", default="box", choices=CROP_RULES,
                   help="the crop rule: deepfakebench (DeepfakeBench's aligned 256-px crops and "
                        "tree), ffpp (FaceForensics++'s square box), recce (RetinaFace, as the "
                        "original release), box (this project's; the default); see docs/data.md")
    p.add_argument("--landmarks", metavar="FILE",
                   help="--crop deepfakebench: dlib's shape predictor (DeepfakeBench's "
                        "shape_predictor_81_face_landmarks.dat; default: the 68-point predictor "
                        "of pip's face-recognition-models)")
    p.add_argument("--detector", default=None,
                   help="face detector: dlib or retinaface (default: the crop rule's; box: dlib)")
    p.add_argument("--weights", help="retinaface: mobilenet0.25_Final.pth or Resnet50_Final.pth")
    p.add_argument("--backbone", choices=["mobilenet0.25", "resnet50"],
                   help="retinaface: default from the weights file name")
    p.add_argument("--device", default="cpu", help="retinaface: cpu or cuda:0")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--frames", type=int, default=FRAMES,
                       help=f"N evenly spaced frames per video ({FRAMES})")
    group.add_argument("--every", type=int, help="every k-th frame")
    group.add_argument("--all", action="store_true", help="every frame")
    p.add_argument("--frames_real", type=float, metavar="N",
                   help="frames per real video (a fraction spreads over the videos: 12.5 gives "
                        "12, 13, 12, ...); the label is read from the dataset's folders")
    p.add_argument("--frames_fake", type=float, metavar="N", help="frames per fake video")
    p.add_argument("--margin", type=float, default=MARGIN,
                   help="crop side = margin x the box's longer side (1.3)")
    p.add_argument("--size", type=int,
                   help="resize crops to size x size (deepfakebench: the aligned crop's side, "
                        "256)")
    p.add_argument("--format", choices=["png", "jpg"], default="png",
                   help="crop files: png (lossless, the default) or jpg")
    p.add_argument("--quality", type=int, default=95, help="jpg quality, 1 to 100 (default 95)")
    # half the cores, shared among torchrun's ranks on this machine
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2 // int(
        os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))
    p.add_argument("--from_manifest", metavar="FILE",
                   help="re-crop exactly the frames and boxes of a manifest.jsonl from the videos "
                        "of --input, without a detector (settings from the manifest_meta.json "
                        "beside it)")
    p.add_argument("--shard", metavar="K/N",
                   help="do shard K of N of the videos (array jobs; torchrun splits by itself)")
    p.add_argument("--merge", action="store_true",
                   help="write manifest.jsonl once every shard of --shard K/N has finished")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")

    rule_args = {"rule": args.crop, "landmarks": args.landmarks,
                 "frames_real": args.frames_real, "frames_fake": args.frames_fake}

    def body():
        with flags(**FLAGS):
            return work()

    def work():
        check_arguments(args)
        args.detector = detector_of(args.crop, args.detector)
        FACE_FINDERS.get(args.detector)
        start = time.time()
        sharded = args.shard is not None or args.merge or int(os.environ.get("WORLD_SIZE", "1")) > 1
        if args.from_manifest and sharded:
            raise UserError("--from_manifest runs in one process: without torchrun, --shard or "
                            "--merge")
        if sharded:
            return sharded_work()
        if args.from_manifest:
            s = recrop(args.from_manifest, args.input, args.out, args.workers,
                       progress=sys.stderr.isatty())
            missed = ("frames not reproduced", s["not_reproduced"])
        else:
            videos = list_videos(args.input, list_file=True, distinct_ids=True)
            detector_args = {"name": args.detector, "weights": args.weights,
                             "backbone": args.backbone, "device": args.device}
            if args.detector == "retinaface":  # fail fast, before starting workers
                load_retinaface_weights(RetinaFaceNet(backbone_of(args.weights, args.backbone)),
                                        args.weights)
            s = extract(videos, args.out, detector_args, None if args.all else args.frames,
                        args.every, args.margin, args.size, args.workers,
                        progress=sys.stderr.isatty(), fmt=args.format, quality=args.quality,
                        **rule_args)
            missed = ("frames without a face", s["no_face"])
        print(f"videos: {s['done']} done, {s['skipped']} already done, {s['failed']} failed; "
              f"frames written: {s['frames']}, {missed[0]}: {missed[1]} "
              f"({time.time() - start:.0f} s)")
        return 1 if s["failed"] or s.get("not_reproduced") else 0

    def sharded_work():
        videos = list_videos(args.input, list_file=True, distinct_ids=True)
        plan = plan_from(args.shard, args.merge)
        detector_args = {"name": args.detector, "weights": args.weights,
                         "backbone": args.backbone, "device": rank_device(plan, args.device)}
        policy = None if args.all else args.frames
        # each video's frames over the whole run: a shard's videos get one process's counts
        frames_of = dict(zip(videos, per_label_frames(videos, policy, args.frames_real,
                                                      args.frames_fake)))
        meta = crop_settings(detector_args, policy, args.every, args.margin, args.size,
                             args.format, args.quality, args.crop, args.landmarks,
                             args.frames_real, args.frames_fake)
        if args.merge:
            if os.path.isdir(args.out):
                write_meta(args.out, meta)  # other settings are refused
            lines = merge_extraction(args.out, videos)
            print(f"merged: {lines} crops in {os.path.join(args.out, MANIFEST)}")
            return 0
        start = time.time()

        def run(mine):
            if args.detector == "retinaface":  # fail fast, before starting workers
                load_retinaface_weights(RetinaFaceNet(backbone_of(args.weights, args.backbone)),
                                        args.weights)
            return extract(mine, args.out, detector_args, policy, args.every, args.margin,
                           args.size, args.workers, progress=sys.stderr.isatty(),
                           fmt=args.format, quality=args.quality, shard=True,
                           frames_of=frames_of, **rule_args)
        s, lines = extract_share(plan, videos, args.out, meta, run, FLAGS)
        if plan.ranks and not plan.merges:
            return 0
        print(f"videos: {s['done']} done, {s['skipped']} already done, {s['failed']} failed; "
              f"frames written: {s['frames']}, frames without a face: {s['no_face']} "
              f"({time.time() - start:.0f} s)" + ("" if plan.ranks else f"; shard {plan.label}"))
        if lines is not None:
            print(f"merged: {lines} crops in {os.path.join(args.out, MANIFEST)}")
        else:
            print(f"shard {plan.label} finished: when every shard has finished, run the same "
                  "command with --merge (without --shard)")
        # under torchrun the failed videos are told by the line above: torchrun takes any other
        # exit status than 0 for a crashed rank
        return 1 if s["failed"] and not plan.ranks else 0
    return run_cli(body, "interrupted: finished videos are kept (marked .done); run the same "
                         "command again to continue")


if __name__ == "__main__":
    from faces.shard import exit_process
    exit_process(main())  # sys.exit, but for a torchrun rank
