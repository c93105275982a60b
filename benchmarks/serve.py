"""``tools/benchmark.py serve``: the page's server under load, and its speed against the command
line (a benchmark, not a test; loopback only, bounded in count and time).

    python tools/benchmark.py serve --checkpoint runs/Recce/<id>/best_model_150.bin

Starts ``python serve.py`` on 127.0.0.1 (a free port, a data folder of its own in a temporary
folder, removed at the end), then:

1. load: a 10-second 720p video with a face (made here, or ``--video``) is uploaded and, while it
   is scored, ``--uploads`` photos are uploaded at once and ``--pollers`` clients poll the job list,
   single jobs and /api/health without pause; every job must complete (none lost), and the API's
   latency while the video is scored is reported (p50, p95, max);
2. speed: upload-to-verdict of the same video through the API (until its record shows) against
   ``python inference.py --video`` on the same file (a fresh process, as a user runs it), and
   upload-to-evidence (the job done: annotated video, heat maps, reports) against ``inference.py
   --video --visualize``, ``--repeats`` times each, alternating.

Prints one JSON object with every figure. Nothing but 127.0.0.1 is ever contacted.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MAX_UPLOADS = 100
MAX_SECONDS = 1800


def make_video(path, seconds=10, fps=25, size=(1280, 720)):
    """A 720p MJPEG clip of Grace Hopper's photograph (matplotlib's sample) moving slowly."""
    import cv2
    import matplotlib.cbook
    import numpy as np
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    face = cv2.resize(face, (300, 350))
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for f in range(seconds * fps):
        canvas = np.full((size[1], size[0], 3), 90, np.uint8)
        x, y = 200 + 2 * f, 150 + f // 2
        canvas[y:y + 350, x:x + 300] = face
        writer.write(canvas)
    writer.release()
    return path


def make_photo(path):
    import cv2
    import matplotlib.cbook
    import numpy as np
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        face = cv2.imdecode(np.frombuffer(fh.read(), np.uint8), cv2.IMREAD_COLOR)
    canvas = np.full((480, 400, 3), 120, np.uint8)
    canvas[60:60 + 350, 50:50 + 300] = cv2.resize(face, (300, 350))
    cv2.imwrite(path, canvas)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path):
        with urllib.request.urlopen(self.base + path, timeout=30) as r:
            return json.load(r)

    def upload(self, path, **form):
        import httpx
        with open(path, "rb") as fh:
            r = httpx.post(self.base + "/api/jobs", data=form, timeout=120,
                           files=[("files", (os.path.basename(path), fh))])
        if r.status_code != 201:
            raise UserError(f"upload of {path}: {r.status_code} {r.text}")
        return r.json()["jobs"][0]["id"]

    def wait(self, job_id, deadline, poll=0.1):
        while time.monotonic() < deadline:
            job = self.get(f"/api/jobs/{job_id}")
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(poll)
        raise UserError(f"job {job_id} did not finish in time (--seconds)")


def start(ckpt, data):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "serve.py", "--checkpoint", ckpt, "--data", data,
                             "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client, t0 = Client(port), time.monotonic()
    while time.monotonic() - t0 < 180:
        try:
            if client.get("/api/health")["workers"]:
                return proc, client
        except OSError:
            pass
        if proc.poll() is not None:
            raise UserError("serve.py stopped at its start")
        time.sleep(0.3)
    proc.kill()
    raise UserError("serve.py did not answer within 180 s")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else None


def load(client, video, photo, uploads, pollers, frames, deadline):
    """The video and the photos at once, pollers measuring the API meanwhile."""
    video_id = client.upload(video, frames=str(frames))
    while client.get(f"/api/jobs/{video_id}")["state"] == "queued":
        time.sleep(0.05)
    ids, errors, latencies = [], [], []
    stop = threading.Event()

    def one_upload():
        try:
            ids.append(client.upload(photo))
        except Exception as exc:  # noqa: BLE001 - counted, reported
            errors.append(str(exc))

    def poll():
        k = 0
        while not stop.is_set():
            path = ("/api/jobs", "/api/health", f"/api/jobs/{video_id}")[k % 3]
            t0 = time.perf_counter()
            try:
                client.get(path)
                latencies.append(time.perf_counter() - t0)
            except OSError as exc:
                errors.append(f"{path}: {exc}")
            k += 1

    polling = [threading.Thread(target=poll, daemon=True) for _ in range(pollers)]
    for t in polling:
        t.start()
    t0 = time.monotonic()
    uploading = [threading.Thread(target=one_upload) for _ in range(uploads)]
    for t in uploading:
        t.start()
    for t in uploading:
        t.join()
    upload_s = time.monotonic() - t0
    video_job = client.wait(video_id, deadline)
    during = list(latencies)
    stop.set()
    for t in polling:
        t.join()
    jobs = [client.wait(i, deadline) for i in ids]
    listed = {j["id"] for j in client.get("/api/jobs")["jobs"]}
    return {"uploads": uploads, "pollers": pollers,
            "upload_all_s": round(upload_s, 2),
            "video_state": video_job["state"],
            "jobs_done": sum(j["state"] == "done" for j in jobs) + (video_job["state"] == "done"),
            "jobs_made": len(ids) + 1, "jobs_lost": len((set(ids) | {video_id}) - listed),
            "errors": errors[:5], "requests_while_scoring": len(during),
            "latency_ms": {k: round(1000 * pct(during, q), 1)
                           for k, q in (("p50", 50), ("p95", 95), ("max", 100))}}


def speed(client, ckpt, video, frames, repeats, deadline, tmp):
    """Upload-to-verdict (the record shown) against inference.py --video, and upload-to-evidence
    (the job done: annotated video, heat maps, reports) against inference.py --video
    --visualize, alternating."""
    verdict, evidence, cli, cli_vis = [], [], [], []
    for r in range(repeats):
        t0 = time.monotonic()
        job_id = client.upload(video, frames=str(frames))
        while time.monotonic() < deadline:
            job = client.get(f"/api/jobs/{job_id}")
            if job["result"] is not None and not verdict[r:]:
                verdict.append(time.monotonic() - t0)
            if job["state"] not in ("queued", "running"):
                break
            time.sleep(0.05)
        evidence.append(time.monotonic() - t0)
        if job["state"] != "done":
            raise UserError(f"the video's job ended {job['state']}: {job['error']}")
        for vis, out in ((False, cli), (True, cli_vis)):
            cmd = [sys.executable, "inference.py", "-b", ckpt, "--video", video, "-d", "cpu",
                   "--frames", str(frames)]
            if vis:
                cmd += ["--visualize", "--vis_dir", os.path.join(tmp, f"vis{r}")]
            t0 = time.monotonic()
            subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            out.append(time.monotonic() - t0)

    def med(v):
        return sorted(v)[len(v) // 2]

    return {"page_upload_to_verdict_s": [round(v, 2) for v in verdict],
            "inference_py_video_s": [round(v, 2) for v in cli],
            "page_upload_to_evidence_s": [round(v, 2) for v in evidence],
            "inference_py_video_visualize_s": [round(v, 2) for v in cli_vis],
            "page_upload_to_verdict_median_s": round(med(verdict), 2),
            "inference_py_video_median_s": round(med(cli), 2),
            "page_upload_to_evidence_median_s": round(med(evidence), 2),
            "inference_py_video_visualize_median_s": round(med(cli_vis), 2),
            "verdict_over_inference_py": round(med(verdict) / med(cli), 3),
            "evidence_over_inference_py_visualize": round(med(evidence) / med(cli_vis), 3),
            "job_seconds_last": job.get("seconds")}


def bench_serve(checkpoint, video=None, uploads=20, pollers=4, frames=32, repeats=2,
                seconds=900):
    """Prints one JSON object with every figure and returns it flattened (``load_...``,
    ``speed_...``: nested keys joined by ``_``). ``video``: the video to score (default: a 10 s
    720p clip made here); ``uploads`` photos uploaded at once (at most MAX_UPLOADS) while
    ``pollers`` clients poll the API; ``frames`` scored of the video; ``repeats`` runs of each
    side of the speed test; give up after ``seconds`` in all (at most MAX_SECONDS)."""
    if not 1 <= uploads <= MAX_UPLOADS:
        raise UserError(f"--uploads {uploads}: expected 1 to {MAX_UPLOADS}")
    if not 0 <= pollers <= 32:
        raise UserError(f"--pollers {pollers}: expected 0 to 32")
    if not 0 < seconds <= MAX_SECONDS:
        raise UserError(f"--seconds {seconds}: expected up to {MAX_SECONDS}")
    if not 1 <= repeats <= 10:
        raise UserError(f"--repeats {repeats}: expected 1 to 10")
    if not os.path.isfile(checkpoint):
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    deadline = time.monotonic() + seconds
    tmp = tempfile.mkdtemp(prefix="bench_serve-")
    proc = None
    try:
        video = video or make_video(os.path.join(tmp, "clip720p.avi"))
        photo = make_photo(os.path.join(tmp, "photo.jpg"))
        proc, client = start(checkpoint, os.path.join(tmp, "data"))
        result = {"checkpoint": checkpoint, "video": os.path.basename(video),
                  "cpus": os.cpu_count(),
                  "load": load(client, video, photo, uploads, pollers, frames, deadline),
                  "speed": speed(client, checkpoint, video, frames, repeats, deadline, tmp)}
        print(json.dumps(result, indent=2))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(tmp)  # our own temporary folder
    return _flat({k: result[k] for k in ("load", "speed")})


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}_"))
        elif value != [] and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                 for v in (value if isinstance(value, list) else [value])):
            out[prefix + key] = value  # numbers and lists of numbers: the figures
    return out
