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
"""
import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # broken videos are reported by us, once

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_IMAGE_SIZE = 2048


def line_for(path, prob, threshold=0.5):
    fake = prob >= threshold
    return f"path: {path} \t\t| fake probability: {prob:.4f} \t| prediction: {'fake' if fake else 'real'}"


def list_images(image=None, folder=None, recursive=False):
    from errors import UserError
    if image:
        if not os.path.isfile(image):
            raise UserError(f"image not found: {image}")
        return [image]
    if not os.path.isdir(folder):
        raise UserError(f"image folder not found: {folder}")
    paths = []
    if recursive:
        for dirpath, dirs, files in os.walk(folder):
            dirs.sort()
            paths += [os.path.join(dirpath, f) for f in files if f.lower().endswith(EXTENSIONS)]
    else:
        from fileio import files_in
        paths = files_in(folder, EXTENSIONS)
    paths.sort()
    if not paths:
        raise UserError(f"no images ({', '.join(EXTENSIONS)}) in {folder}"
                        + ("" if recursive else " (use --recursive for sub-folders)"))
    return paths


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
    m.add_argument("--detector", default="dlib", help="face detector: dlib (default) or retinaface")
    m.add_argument("--detector_weights", help="retinaface: mobilenet0.25_Final.pth or Resnet50_Final.pth")
    m.add_argument("--frames", type=int, default=None, help="video: N evenly spaced frames (32)")
    m.add_argument("--every", type=int, help="video: every k-th frame")
    m.add_argument("--all_frames", action="store_true", help="video: every frame")
    m.add_argument("--margin", type=float, default=1.3, help="crop side = margin x the face box")
    m.add_argument("--min_face_score", type=float, default=None,
                   help="detections scored lower are not faces (dlib 0.5, retinaface 0.6)")
    m.add_argument("--min_face_size", type=int, default=30,
                   help="boxes with a shorter side in pixels are not faces (30)")
    m.add_argument("--frames_output", help="one row per scored face in a frame (.csv)")
    m.add_argument("--threshold_from", help="use the EER threshold of a test.py metrics.json")
    p.add_argument("--device", "-d", default=None, help="cpu, cuda, cuda:0 ... (default: cuda:0 if available)")
    p.add_argument("--image_size", "-s", type=int, default=None,
                   help="input size (default: the one the checkpoint was trained with)")
    p.add_argument("--visualize", "-v", action="store_true",
                   help="write face | reconstruction | difference heat map PNGs into --vis_dir")
    p.add_argument("--vis_dir", default="vis", help="folder for --visualize (default: vis)")
    p.add_argument("--batch_size", type=int, default=None,
                   help="images per forward pass (default: 2 on the CPU, 32 on a GPU)")
    p.add_argument("--num_workers", type=int, default=None,
                   help="decoding processes (default: 2 on the CPU, 4 on a GPU)")
    p.add_argument("--recursive", action="store_true", help="also score images in sub-folders")
    p.add_argument("--eager", action="store_true",
                   help="GPU: run the plain forward instead of replaying CUDA graphs")
    p.add_argument("--threshold", type=float, default=0.5, help="fake when probability >= this")
    p.add_argument("--output", help="also write the results to a .csv or .json file")
    p.add_argument("--num_classes", type=int, choices=(1, 2), default=None,
                   help="logits of the model (default: read from the checkpoint)")
    p.add_argument("--model", default=None,
                   help="the model of a bare state dict (default: the checkpoint's config says; "
                        "RECCE for state dicts)")
    p.add_argument("--max_pixels", type=int, default=None,
                   help="refuse images with more pixels than this (default 64 million)")
    p.add_argument("--trust", action="store_true",
                   help="allow a checkpoint that needs full unpickling (only from a trusted source)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="a module or .py file registering your own detector (as config.imports); "
                        "repeatable")
    return p.parse_args(argv)


def draw_panels(name, x, recons, prob, out_dir, fake, mean, std):
    """One PNG: the face, its reconstruction and the reconstruction-difference heat map (RECCE's
    forgery cue), each panel labelled, the heat map's colour scale beneath it, the score on top."""
    import cv2
    import numpy as np
    m, s = np.array(mean, np.float32), np.array(std, np.float32)
    face = ((x.permute(1, 2, 0).numpy() * s + m) * 255).clip(0, 255).astype(np.uint8)
    rec = ((recons.permute(1, 2, 0).numpy() * s + m) * 255).clip(0, 255).astype(np.uint8)
    from faces.media import HEAT_MAX, heat_map, heat_ramp
    from fileio import atomic_write_image
    diff = (x - recons).abs().mean(0).numpy()  # on the model's normalised scale
    side = max(128, face.shape[0])
    heat = heat_map(diff, side, cv2.INTER_NEAREST)  # one colour scale for every panel and picture
    panels = [cv2.resize(p, (side, side), interpolation=cv2.INTER_NEAREST)
              for p in (cv2.cvtColor(face, cv2.COLOR_RGB2BGR), cv2.cvtColor(rec, cv2.COLOR_RGB2BGR),
                        heat)]
    labels = ("face", "reconstruction", "|face - reconstruction|")
    font = cv2.FONT_HERSHEY_SIMPLEX
    columns = []
    for panel, label in zip(panels, labels):
        head = np.full((22, side, 3), 255, np.uint8)
        cv2.putText(head, label, (4, 16), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        foot = np.full((26, side, 3), 255, np.uint8)
        if label.startswith("|"):  # the colour scale of the heat map
            foot[2:10, 4:side - 4] = heat_ramp(side - 8, 8)
            cv2.putText(foot, "0", (4, 23), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
            cv2.putText(foot, f"{HEAT_MAX:g}+", (side - 36, 23), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        columns.append(np.vstack([head, panel, foot]))
    body = np.hstack(columns)
    bar = np.full((28, body.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, f"fake probability {prob:.4f} ({'fake' if fake else 'real'})", (6, 20),
                font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, os.path.splitext(name)[0] + ".png")
    atomic_write_image(out, np.vstack([bar, body]))
    return out


class _Images:
    """Decodes (a path) or takes (an RGB array), resizes and normalizes one image in a worker; a
    bad file yields its error."""

    def __init__(self, items, spec, max_pixels):
        from dataset.transforms import eval_transforms
        self.items = items
        self.max_pixels = max_pixels
        self.transform = eval_transforms(spec)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from dataset import read_rgb
        from errors import UserError
        item = self.items[i]
        if isinstance(item, str):
            try:
                item = read_rgb(item, self.max_pixels)
            except UserError as exc:
                return {"index": i, "error": str(exc)}
        return {"index": i, "image": self.transform(image=item)["image"]}


def _collate(samples):
    import torch
    good = [s for s in samples if "image" in s]
    return {"index": [s["index"] for s in good],
            "image": torch.stack([s["image"] for s in good]) if good else None,
            "errors": [(s["index"], s["error"]) for s in samples if "error" in s]}


def _as_items(images):
    """``predict``'s argument -> a list of paths and RGB arrays (a folder: its images, sorted)."""
    import numpy as np
    from errors import UserError
    if isinstance(images, (str, os.PathLike)):
        images = os.fspath(images)
        return list_images(folder=images) if os.path.isdir(images) else list_images(image=images)
    if isinstance(images, np.ndarray):
        images = [images]
    items = []
    for k, item in enumerate(images):
        if isinstance(item, (str, os.PathLike)):
            items.append(os.fspath(item))
        elif isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3:
                raise UserError(f"image {k}: expected an H x W x 3 RGB uint8 array, got "
                                f"{item.dtype} {tuple(item.shape)}")
            items.append(item)
        else:
            raise UserError(f"image {k}: expected a path or an RGB array, got "
                            f"{type(item).__name__}")
    return items


class Detector:
    """A trained face-forgery detector, ready to score: the Python API behind inference.py.

        from inference import Detector
        det = Detector.from_checkpoint("runs/Recce/<id>/best_model_150.bin", device="cpu")
        det.predict("faces/")                  # a folder, a path, paths or RGB arrays -> [p_fake]
        det.predict_video("clip.mp4")          # the record inference.py --video writes
        det.predict_photo("photo.jpg")         # the record inference.py --detect writes

    Images are prepared as the checkpoint's model was trained (``det.spec``).
    """

    def __init__(self, model, device, threshold=0.5, batch_size=None, num_workers=0,
                 max_pixels=None, graphs=True):
        from model.graphs import GraphedScorer
        self.model, self.device = model, device
        # on a GPU, each batch shape's forward is captured once as a CUDA graph and replayed
        # (batch 1 is launch-bound); the eager forward elsewhere or when a capture fails
        self.forward = GraphedScorer(model, enabled=graphs)
        self.threshold = threshold
        self.batch_size = batch_size or (32 if device.type == "cuda" else 8)
        self.num_workers = num_workers
        self.max_pixels = max_pixels
        self._face_detectors = {}

    @classmethod
    def from_checkpoint(cls, path, device=None, *, trust=False, model=None, num_classes=None,
                        image_size=None, imports=(), **kwargs):
        """Any checkpoint flavour (this project's, the original's, a bare state dict,
        DeepfakeBench's); ``model`` names the detector of a bare state dict, ``imports`` files
        that register your own detector; never downloads anything."""
        from errors import UserError
        from model.checkpoint import load_detector, pick_device
        from registry import import_modules
        import_modules(list(imports), where="--import")
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise UserError(f"checkpoint not found: {path}")
        dev = pick_device(device)
        det = load_detector(path, dev, trusted=trust, name=model, num_classes=num_classes,
                            image_size=image_size)
        return cls(det, dev, **kwargs)

    @property
    def spec(self):
        return self.model.spec

    def score_items(self, items, names=None, vis_dir=None):
        """Yields (index, probability or None, error) in order, streaming through DataLoader
        workers; with ``vis_dir``, a face | reconstruction | difference panel per image."""
        import torch
        from torch.utils.data import DataLoader

        from dataset.base import DEFAULT_MAX_PIXELS, iterate_quietly, worker_init
        on_gpu = self.device.type == "cuda"
        images = _Images(items, self.spec, self.max_pixels or DEFAULT_MAX_PIXELS)
        loader = DataLoader(images, batch_size=self.batch_size, num_workers=self.num_workers,
                            collate_fn=_collate, pin_memory=on_gpu,
                            worker_init_fn=worker_init if self.num_workers else None)
        visualize = vis_dir is not None and self.model.has_reconstruction
        with torch.inference_mode():
            for b in iterate_quietly(loader):
                results = [(i, None, err) for i, err in b["errors"]]
                if b["image"] is not None:
                    x = b["image"].to(self.device, non_blocking=True)
                    out = self.forward(x, aux=visualize)
                    probs = out["prob"].cpu().tolist()
                    for j, i in enumerate(b["index"]):
                        if visualize:
                            draw_panels(names[i], x[j].float().cpu(),
                                        out["recons"][j].float().cpu(), probs[j], vis_dir,
                                        probs[j] >= self.threshold, self.spec.mean, self.spec.std)
                        results.append((i, probs[j], None))
                yield from sorted(results, key=lambda r: r[0])

    def predict(self, images):
        """Fake probabilities, in the order given: ``images`` is a folder (its images, sorted by
        path), an image path, or a list of paths and H x W x 3 RGB uint8 arrays. An unreadable
        file is an error that names it."""
        from errors import UserError
        items = _as_items(images)
        probs = [None] * len(items)
        for i, prob, err in self.score_items(items):
            if err:
                raise UserError(f"{items[i]}: {err}")
            probs[i] = prob
        return probs

    def _face_detector(self, name, weights):
        from faces.detectors import build_face_detector
        from errors import UserError
        if name == "retinaface" and not weights:
            raise UserError("--detector retinaface needs --detector_weights FILE (or use "
                            "--detector dlib)")
        if (name, weights) not in self._face_detectors:
            self._face_detectors[(name, weights)] = build_face_detector(name, weights, None, "cpu")
        return self._face_detectors[(name, weights)]

    def _scorer(self):
        from faces.media import Scorer
        return Scorer(self.model, self.device, self.batch_size, forward=self.forward)

    def score_video(self, path, frames=32, every=None, all_frames=False, margin=1.3,
                    face_detector="dlib", detector_weights=None, vis_dir=None, name=None,
                    min_face_score=None, min_face_size=30):
        """A video -> ``faces.media.Result`` (faces found, tracked, cropped, scored); pictures
        into ``vis_dir`` under ``name`` (default: the file's stem)."""
        from faces import media
        vis = media.Visualizer(vis_dir, path, name=name) if vis_dir else None
        r = media.score_video(os.fspath(path), self._face_detector(face_detector, detector_weights),
                              self._scorer(), self.threshold, None if all_frames else frames,
                              every, margin, vis, self.max_pixels, min_face_score,
                              min_face_size)
        if vis is not None:
            vis.close(r, self.threshold) if r.error is None else vis.discard()
        return r

    def score_photo(self, path, margin=1.3, face_detector="dlib", detector_weights=None,
                    vis_dir=None, name=None, min_face_score=None, min_face_size=30):
        """A photo -> ``faces.media.Result`` (every face detected and scored)."""
        from faces import media
        vis = media.Visualizer(vis_dir, path, name=name) if vis_dir else None
        return media.score_photo(os.fspath(path),
                                 self._face_detector(face_detector, detector_weights),
                                 self._scorer(), self.threshold, margin, self.max_pixels, vis,
                                 min_face_score, min_face_size)

    def predict_video(self, path, **kwargs):
        """The record inference.py --video writes for ``path`` (its ``--output`` row), with
        ``faces``: the rows of ``--frames_output``. Options as ``score_video``."""
        from faces.media import face_records, record
        r = self.score_video(path, **kwargs)
        return {**record(r), "faces": face_records(r)}

    def predict_photo(self, path, **kwargs):
        """The record inference.py --detect writes for a photo, with its ``faces``."""
        from faces.media import face_records, record
        r = self.score_photo(path, **kwargs)
        return {**record(r), "faces": face_records(r)}


def checkpoint_path(args):
    from errors import UserError
    path = args.bin or args.weight
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    return path


def detector_from_args(args):
    """The API's Detector from the command line's options (decoding workers: 2 on the CPU, 4 on
    a GPU, unless --num_workers)."""
    det = Detector.from_checkpoint(
        checkpoint_path(args), args.device, trust=args.trust, model=args.model,
        num_classes=args.num_classes, image_size=args.image_size, imports=args.imports,
        threshold=args.threshold, batch_size=args.batch_size, max_pixels=args.max_pixels,
        graphs=not args.eager)
    det.num_workers = args.num_workers if args.num_workers is not None else \
        (4 if det.device.type == "cuda" else 2)
    return det


def score(args):
    """Yields (path, probability or None, error) in sorted path order, streaming."""
    checkpoint_path(args)
    paths = list_images(args.image, args.image_folder, args.recursive)
    det = detector_from_args(args)
    if args.batch_size is None and det.device.type != "cuda":
        det.batch_size = 2
    vis_dir = args.vis_dir if args.visualize else None
    if args.visualize and not det.model.has_reconstruction:
        print(f"--visualize: {type(det.model).__name__} has no reconstruction, so there is no "
              "heat map to draw; scoring only", file=sys.stderr)
        vis_dir = None
    args._maps = vis_dir is not None
    root = os.path.dirname(paths[0]) if args.image else args.image_folder
    names = [os.path.relpath(p, root).replace(os.sep, "__") for p in paths]
    for i, prob, err in det.score_items(paths, names, vis_dir):
        yield paths[i], prob, err


def write_results(path, rows, threshold):
    """The results file, written atomically (an interrupt leaves none, not half of one)."""
    import csv
    import json

    from fileio import atomic_write
    if path.lower().endswith(".json"):
        atomic_write(path, lambda fh: json.dump(
            [{"path": p, "fake_probability": prob,
              "prediction": None if prob is None else ("fake" if prob >= threshold else "real"),
              "error": err} for p, prob, err in rows], fh, indent=1))
    else:
        def write(fh):
            w = csv.writer(fh)
            w.writerow(["path", "fake_probability", "prediction", "error"])
            for p, prob, err in rows:
                w.writerow([p, "" if prob is None else repr(prob),
                            "" if prob is None else ("fake" if prob >= threshold else "real"),
                            err or ""])
        atomic_write(path, write, newline="")


def check_arguments(args):
    from errors import UserError
    if args.output and not args.output.lower().endswith((".csv", ".json")):
        raise UserError(f"--output {args.output}: use a .csv or .json file name")
    for name in ("batch_size", "image_size", "max_pixels"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} {value}: expected a positive number")
    if args.num_workers is not None and args.num_workers < 0:
        raise UserError(f"--num_workers {args.num_workers}: expected 0 or more")
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold {args.threshold}: expected a probability in [0, 1]")
    for name in ("frames", "every"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserError(f"--{name} {value}: expected a positive integer")
    import math
    if args.min_face_size < 1:
        raise UserError(f"--min_face_size {args.min_face_size}: expected a positive number of "
                        "pixels")
    if args.min_face_score is not None and not math.isfinite(args.min_face_score):
        raise UserError(f"--min_face_score {args.min_face_score}: expected a finite number")
    if not (args.margin > 0 and math.isfinite(args.margin)):
        raise UserError(f"--margin {args.margin}: expected a positive number (1.3 is usual)")
    if args.image_size is not None and args.image_size > MAX_IMAGE_SIZE:
        raise UserError(f"--image_size {args.image_size}: at most {MAX_IMAGE_SIZE} (a face crop "
                        "model's input; the checkpoint's own size is the default)")
    if sum([args.frames is not None, args.every is not None, args.all_frames]) > 1:
        raise UserError("--frames, --every and --all_frames each choose the frames: give one")
    if args.frames_output and not args.frames_output.lower().endswith(".csv"):
        raise UserError(f"--frames_output {args.frames_output}: use a .csv file name")
    if args.output and args.frames_output and \
            os.path.abspath(args.output) == os.path.abspath(args.frames_output):
        raise UserError(f"--output and --frames_output are both {args.output}: give two files")
    if args.visualize:
        from fileio import check_output_dir
        check_output_dir(args.vis_dir, "--vis_dir")


def score_media(args):
    """--video, or --detect with --image/--image_folder: faces found, tracked, cropped, scored."""
    from faces import media
    from faces.detectors import FACE_DETECTORS
    checkpoint_path(args)
    items = media.list_videos(args.video) if args.video else \
        list_images(args.image, args.image_folder, args.recursive)
    FACE_DETECTORS.get(args.detector)
    det = detector_from_args(args)
    det._face_detector(args.detector, args.detector_weights)  # its errors before the work
    if args.visualize and not det.model.has_reconstruction:
        print(f"--visualize: {type(det.model).__name__} has no reconstruction: boxes and "
              "timelines only, no heat map", file=sys.stderr)
    vis_dir = args.vis_dir if args.visualize else None
    stems = [os.path.splitext(os.path.basename(i))[0] for i in items]
    results, failed = [], 0
    for item, stem in zip(items, stems):
        # two inputs of one stem (a.mp4, a.avi) get their pictures under their full names
        name = stem if stems.count(stem) == 1 else os.path.basename(item).replace(".", "_")
        if args.video:
            r = det.score_video(item, args.frames or 32, args.every, args.all_frames, args.margin,
                                args.detector, args.detector_weights, vis_dir, name=name,
                                min_face_score=args.min_face_score,
                                min_face_size=args.min_face_size)
        else:
            r = det.score_photo(item, args.margin, args.detector, args.detector_weights, vis_dir,
                                name=name, min_face_score=args.min_face_score,
                                min_face_size=args.min_face_size)
        results.append(r)
        if r.error:
            failed += 1
            print(f"skipped {item}: {r.error}", file=sys.stderr)
        else:
            failed += r.score is None or r.warning is not None
            print(media.result_line(r, det.threshold), flush=True)
            if r.warning:
                print(f"warning: {item}: {r.warning}", file=sys.stderr)
    if args.output:
        media.write_results(args.output, results)
    if args.frames_output:
        media.write_frames(args.frames_output, results)
    say_written(args, args.visualize)
    return 1 if failed else 0


def score_crops(args):
    """Face crops (--image / --image_folder): one line each, in sorted path order."""
    rows, failed = [], 0
    for path, prob, err in score(args):
        if err:
            failed += 1
            print(f"skipped {path}: {err}", file=sys.stderr)
        else:
            print(line_for(path, prob, args.threshold), flush=False)
        if args.output:
            rows.append((path, prob, err))
    if args.output:
        rows.sort(key=lambda r: r[0])
        write_results(args.output, rows, args.threshold)
    sys.stdout.flush()
    say_written(args, getattr(args, "_maps", False))  # panels only where the model has maps
    return 1 if failed else 0


def say_written(args, pictures):
    """One stderr line naming every file or folder written (stdout keeps one line per input)."""
    written = [p for p in (args.output, args.frames_output) if p]
    if pictures:
        written.append(f"{args.vis_dir}{os.sep}")
    if written:
        print(f"written: {', '.join(written)}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    from errors import UserError, run_cli
    from fileio import check_output_file

    def body():
        check_arguments(args)
        media_mode = bool(args.video or args.detect)
        if args.frames_output and not media_mode:
            raise UserError("--frames_output lists the faces found in videos and photos: use it "
                            "with --video or --detect")
        for name in ("output", "frames_output"):
            if getattr(args, name):
                check_output_file(getattr(args, name), f"--{name}")
        if args.threshold_from:
            from faces.media import threshold_from
            args.threshold = threshold_from(args.threshold_from)
            print(f"threshold: {args.threshold:.4f} (EER threshold of {args.threshold_from})",
                  file=sys.stderr)
        return score_media(args) if media_mode else score_crops(args)
    return run_cli(body, "interrupted: the lines above were scored; no output file was written")


if __name__ == "__main__":
    sys.exit(main())
