"""The processes that score the page's jobs: each loads the checkpoint once (once per operating
point asked for), claims queued jobs from the store one at a time and writes each job's outputs
into the job's own folder (``out/``): the record (JSON and CSV), the per-face table, the annotated
video or photo, the timeline, a heat-map panel per person, the HTML and PDF reports.

Progress (frames of the total, the time left) and cancelling go through the store: the face
detector of a job is watched, so that before each frame the job's state is read back (a cancelled
job stops there) and its progress written.
"""
import os
import signal
import sys
import threading
import time

from errors import UserError, one_line

OUT = "out"
MAX_HEAT_MAPS = 8  # persons (video) or faces (photo) that get a heat-map panel
PROGRESS_EVERY = 0.25  # seconds between two progress writes (and cancel checks)


class JobStopped(Exception):
    """The job was cancelled (or the server went away) while it ran."""


class _Watched:
    """A face detector that calls ``hook()`` before each frame it is given."""

    def __init__(self, inner, hook):
        self.inner, self.hook = inner, hook
        self.name = getattr(inner, "name", "")

    def __call__(self, rgb):
        self.hook()
        return self.inner(rgb)

    def __getattr__(self, key):
        return getattr(self.inner, key)


def _predictor_class():
    from faces.api import Predictor

    class JobPredictor(Predictor):
        """The Python API's Predictor, with the face detector watched while a job runs."""
        hook = None

        def face_detector(self, name, weights=None):
            inner = super().face_detector(name, weights)
            return _Watched(inner, self.hook) if self.hook is not None else inner
    return JobPredictor


class Predictors:
    """The checkpoint loaded once per operating point (``threshold``: None is the checkpoint's
    own default), each kept for the next job that asks for it."""

    def __init__(self, checkpoint, device="cpu", batch_size=None, detector_weights=None,
                 load=None):
        self.checkpoint, self.device = checkpoint, device
        self.batch_size, self.detector_weights = batch_size, detector_weights
        # from_checkpoint's: model, imports, trust, backend, precision, threads
        self.load = dict(load or {})
        self.cache = {}
        self.get(None)

    def get(self, threshold):
        if threshold not in self.cache:
            cls = _predictor_class()
            kwargs = {} if threshold is None else {"threshold": threshold}
            # as inference.py scores videos and photos on the CPU: 8 faces a batch
            self.cache[threshold] = cls.from_checkpoint(self.checkpoint, self.device,
                                                        batch_size=self.batch_size or 8,
                                                        **self.load, **kwargs)
        return self.cache[threshold]


def planned_frames(path, frames, every):
    """How many frames of a video a job will score (from its header; None when it says nothing)."""
    import cv2

    from faces.arguments import frame_choice
    from faces.video import frame_indices
    cap = cv2.VideoCapture(path)
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    if total <= 0:
        return None
    f, e = frame_choice(frames, every, False)
    return len(frame_indices(total, f, e))


def persons_of(record):
    """One row per face track of a record: its frames, mean fake probability, whether it is a
    person (seen in enough frames: the first ``record["persons"]`` in the verdict's order) and
    whether it decides the verdict."""
    tracks = {}
    for f in record.get("faces") or []:
        tracks.setdefault(f["track"], []).append(f)
    rows = []
    for t, faces in tracks.items():
        probs = [f["fake_probability"] for f in faces]
        size = sum((f["x2"] - f["x1"]) * (f["y2"] - f["y1"]) for f in faces) / len(faces)
        rows.append({"track": t, "frames": len(faces), "fake_probability": sum(probs) / len(probs),
                     "max_probability": max(probs), "size": size})
    if record.get("kind") == "photo":
        rows.sort(key=lambda r: -r["fake_probability"])
    else:
        rows.sort(key=lambda r: (-r["frames"], -r["size"], r["track"]))
    deciding = record.get("track") if record.get("kind") == "video" else \
        (rows[0]["track"] if rows else None)
    persons = record.get("persons") or 0
    for k, r in enumerate(rows):
        r["person"] = record.get("kind") == "photo" or k < persons
        r["decides"] = r["track"] == deciding and record.get("fake_probability") is not None
        del r["size"]
    return rows


def _heat_maps(pred, record, path, out, margin):
    """A panel per person (video: the face of its most suspicious frame; photo: each face): the
    face cut again by the crop rule that cut it for scoring, its reconstruction and the evidence
    maps (``Predictor.score_items``)."""
    from dataset import read_rgb
    from faces.finders import Detection
    from faces.video import iter_frames
    rule = pred.crop_rule(record.get("face_crop") or "box", margin)  # the scoring's own
    best = {}
    for f in record.get("faces") or []:
        if f["track"] not in best or f["fake_probability"] > best[f["track"]]["fake_probability"]:
            best[f["track"]] = f
    chosen = [best[p["track"]] for p in persons_of(record) if p["person"]][:MAX_HEAT_MAPS]
    if not chosen:
        return {}
    if record["kind"] == "photo":
        frames = {0: read_rgb(path)}
    else:
        frames = {i: rgb for i, _, rgb in iter_frames(path, indices=[f["frame"] for f in chosen])}
    crops, names = [], []
    for f in chosen:
        rgb = frames.get(f["frame"])
        piece = rule.cut(rgb, Detection((f["x1"], f["y1"], f["x2"], f["y2"]),
                                        f["detector_score"])) if rgb is not None else None
        crop = piece.crop if piece is not None else None
        if crop is not None:
            crops.append(crop)
            names.append(f"face_{f['track']}.png")
    if not crops:
        return {}
    done = {}
    for i, prob, err, *_ in pred.score_items(crops, names, out):  # (raw probability after)
        if not err:
            done[str(chosen[i]["track"])] = {"file": names[i], "frame": chosen[i]["frame"],
                                             "time": chosen[i]["time"], "fake_probability": prob}
    return done


def run_job(store, job, predictors, model_info=None, parent=None):
    """Score one claimed job and write its outputs; the store says how it ended. A video is
    scored twice: first for the verdict alone (as fast as ``inference.py --video``), which is
    published at once, then for its evidence (the annotated video, the timeline, heat maps,
    reports), after which the job is done. Errors of the job (a bad setting, a full disk, an
    unreadable file) fail it with their reason; the worker goes on."""
    from faces.crop import MARGIN
    from faces.media import FACE_COLUMNS, MEDIA_COLUMNS
    from fileio import atomic_write_text, write_table

    from . import report
    job_id, settings = job["id"], job["settings"]
    folder = store.folder(job_id)
    path = os.path.join(folder, job["input"])
    out = os.path.join(folder, OUT)
    started = time.monotonic()
    pred = None
    try:
        from model.calibration import parse_threshold
        pred = predictors.get(parse_threshold(settings.get("threshold") or None))
        video = job["kind"] == "video"
        total = planned_frames(path, settings.get("frames"), settings.get("every")) \
            if video else 1
        seen = {"frames": 0, "last": 0.0, "phase": "scoring", "since": started}

        def hook():
            if parent is not None and os.getppid() != parent:
                raise JobStopped("the server stopped")
            seen["frames"] += 1
            now = time.monotonic()
            if now - seen["last"] >= PROGRESS_EVERY:
                seen["last"] = now
                if store.state(job_id) != "running":
                    raise JobStopped("cancelled")
                done = seen["frames"] - 1
                eta = ((now - seen["since"]) / done * (total - done)) if done and total else None
                store.set_progress(job_id, {"phase": seen["phase"], "done": done, "total": total,
                                            "eta_s": eta, "elapsed_s": now - started})

        def phase(name):
            seen.update(frames=0, last=0.0, phase=name, since=time.monotonic())
            store.set_progress(job_id, {"phase": name, "done": 0, "total": total, "eta_s": None,
                                        "elapsed_s": time.monotonic() - started})

        phase("scoring")
        pred.hook = hook
        options = {"face_detector": settings.get("face_detector") or None,
                   "detector_weights": predictors.detector_weights,
                   "min_face_score": settings.get("min_face_score")}
        frames = {"frames": settings.get("frames"), "every": settings.get("every")}
        if video:
            record = pred.predict_video(path, **frames, **options)
        else:
            record = pred.predict_photo(path, name="photo", vis_dir=out, **options)
        scored = time.monotonic() - started
        if store.state(job_id) != "running":
            raise JobStopped("cancelled")
        extra = {"threshold": record.get("threshold", pred.threshold),
                 "threshold_source": record.get("threshold_source",
                                                getattr(pred, "threshold_source", None)),
                 "persons": persons_of(record), "heat_maps": {}, "files": [],
                 "model": model_info, "seconds": {"verdict": scored}}
        store.publish(job_id, record, extra)  # the verdict, before its evidence
        if video and record.get("faces"):
            phase("annotating the video")
            pred.predict_video(path, **frames, **options, vis_dir=out, name="video")
        pred.hook = None
        store.set_progress(job_id, {"phase": "writing the reports", "done": total,
                                    "total": total, "eta_s": None,
                                    "elapsed_s": time.monotonic() - started})
        extra["heat_maps"] = _heat_maps(pred, record, path, out, MARGIN) \
            if record.get("faces") else {}
        os.makedirs(out, exist_ok=True)
        atomic_write_text(os.path.join(out, "record.json"), report.to_json(record))
        columns = list(MEDIA_COLUMNS) + [k for k in record if k not in MEDIA_COLUMNS
                                         and k != "faces"]
        write_table(os.path.join(out, "record.csv"),
                    [{k: v for k, v in record.items() if k != "faces"}], columns)
        write_table(os.path.join(out, "faces.csv"), record.get("faces") or [], FACE_COLUMNS)
        extra["seconds"]["total"] = time.monotonic() - started
        report.write_reports(dict(job, result=record, extra=extra, state="done"), out)
        extra["files"] = sorted(f for f in os.listdir(out) if not f.startswith("."))
        extra["seconds"]["total"] = time.monotonic() - started
        store.finish(job_id, record, extra)
    except JobStopped:
        pass  # the state is already cancelled (or the server is gone)
    except (UserError, OSError, ValueError, RuntimeError) as exc:
        store.fail(job_id, one_line(exc) or type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - a job's failure never stops the worker
        store.fail(job_id, f"{type(exc).__name__}: {one_line(exc)}")
    finally:
        if pred is not None:
            pred.hook = None
        store.release(job_id)


def worker_loop(store, predictors, stop, worker=None, model_info=None, parent=None, poll=0.3):
    """Claim and run queued jobs until ``stop`` (a threading or multiprocessing Event) is set."""
    worker = worker if worker is not None else os.getpid()
    while not stop.is_set():
        if parent is not None and os.getppid() != parent:
            return
        job = store.claim(worker)
        if job is None:
            stop.wait(poll)
            continue
        run_job(store, job, predictors, model_info, parent)


def worker_main(data, checkpoint, options, model_info, parent, stop, ready=None):
    """The target of a worker process (``multiprocessing``, spawned): load the model, set
    ``ready`` (a shared value, to 1: from then on it may hold a job), then ``worker_loop``."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which stops us
    from .store import JobStore
    store = JobStore(data)
    try:
        predictors = Predictors(checkpoint, options.get("device", "cpu"),
                                options.get("batch_size"), options.get("detector_weights"),
                                options.get("load"))
    except UserError as exc:
        print(f"error: worker: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)
    if ready is not None:
        ready.value = 1
    worker_loop(store, predictors, stop, os.getpid(), model_info, parent)


def start_thread(store, predictors, model_info=None):
    """``worker_loop`` in a thread of this process (the tests; no process start): returns
    (thread, stop event)."""
    stop = threading.Event()
    t = threading.Thread(target=worker_loop, args=(store, predictors, stop),
                         kwargs={"model_info": model_info, "poll": 0.05}, daemon=True)
    t.start()
    return t, stop
