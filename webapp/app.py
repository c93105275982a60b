"""The FastAPI application of ``python serve.py``: the HTTP API (the one the page uses) and the
page itself (``webapp/static``: plain HTML, CSS and JavaScript, served from here, nothing fetched
from elsewhere).

Uploads are written into a new job's own folder, then opened by a decoder: a photo (OpenCV's image
decoder, as the rest of the project reads photos) or else a video (a frame decoded, its length
read); anything else is refused with a reason (415), as are files over the size limit (413),
videos over the length limit and bad settings (422). A request is refused whole: either every
file of it becomes a job or none does. No route serves a path built from anything but a job id
and a name listed in that job's own output folder.
"""
import hmac
import inspect
import ipaddress
import os
import re
import shutil
import time

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from checks import Key
from errors import UserError, one_line
from faces.arguments import KEYWORDS

from .store import FINISHED, JobStore, new_id, valid_id
from .worker import OUT

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's files, served here: /docs works offline


def docs_assets():
    """The folder of Swagger UI's and ReDoc's files that the pip package fastapi-offline ships
    (requirements-serve.txt; serve.py says so in one line where it is missing)."""
    from importlib.resources import files
    return str(files("fastapi_offline") / "static")
MB = 1 << 20
MAX_FILES = 20  # files per request
TOKEN_COOKIE = "recce_token"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DOWNLOADS = {"report.pdf": "application/pdf", "report.html": "text/html; charset=utf-8",
             "report.json": "application/json", "records.csv": "text/csv; charset=utf-8",
             "faces.csv": "text/csv; charset=utf-8"}
SOURCE_FILES = {"report.pdf": "report.pdf", "report.html": "report.html",
                "report.json": "record.json", "records.csv": "record.csv",
                "faces.csv": "faces.csv"}


def is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BadUpload(Exception):
    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


def probe(path, max_seconds):
    """What an uploaded file is, by its content: ("photo", extension) when OpenCV's image decoder
    reads it, ("video", ".video") when a video decoder gives a frame; else BadUpload (415). A
    picture whose header states more pixels than the limit is refused (413) from its header and
    never handed to the video decoder (which would decode the whole picture to open it); a video
    whose frames are over the limit is refused from its stream's dimensions, before a frame is
    decoded."""
    import cv2

    from dataset import read_rgb
    from dataset.base import DEFAULT_MAX_PIXELS, ImageTooLarge
    try:
        read_rgb(path)
        with open(path, "rb") as fh:
            head = fh.read(16)
        ext = ".png" if head.startswith(b"\x89PNG") else ".jpg" if head.startswith(b"\xff\xd8") \
            else ".img"
        return "photo", ext, None
    except ImageTooLarge as exc:
        raise BadUpload(413, f"a picture of {exc.width} x {exc.height} pixels, more than the "
                             f"limit of {exc.limit:,} (max_pixels)") from None
    except UserError:
        pass
    cap = cv2.VideoCapture(path)
    try:
        w = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        h = int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
        if w * h > DEFAULT_MAX_PIXELS:
            raise BadUpload(413, f"a video of {w} x {h} pixels a frame, more than the limit of "
                                 f"{DEFAULT_MAX_PIXELS:,} (max_pixels)")
        ok = cap.isOpened() and cap.read()[0]
        if not ok:
            raise BadUpload(415, "not a photo or a video (no image or video decoder opens it)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    seconds = frames / fps if fps > 0 and frames > 0 else None
    if seconds is not None and seconds > max_seconds:
        raise BadUpload(422, f"a video of {seconds:.0f} s, longer than the limit of "
                             f"{max_seconds:g} s (--max_seconds)")
    return "video", ".video", seconds


# The form fields of POST /api/jobs: the Python API's keywords of those names (faces.arguments:
# kind, bounds, what each is), read from text, and the two this server chooses among: its face
# detectors and, by model.calibration's one reading, the checkpoint's operating points.
FORM = (KEYWORDS["frames"], KEYWORDS["every"],
        Key("face_detector", None, "name?", "a face detector of this server (none: the crop "
            "rule's)"),
        KEYWORDS["min_face_score"],
        Key("threshold", None, "name?", "a probability, or an operating point where calibrated, "
            "or two of them as an uncertain band a:b"))


def parse_settings(form, detectors, operating_points):
    """The job settings of the form fields (text; empty is none) -> values; a bad one is a
    BadUpload (422) naming the field and the value."""
    from faces.arguments import frame_choice
    from model.calibration import parse_threshold
    out = {key.path: form.get(key.path) or None for key in FORM}
    try:
        for name in ("frames", "every", "min_face_score"):
            out[name] = KEYWORDS[name].check(out[name], text_numbers=True)
        frame_choice(out["frames"], out["every"], False)
        det = out["face_detector"]  # None: the checkpoint's crop rule's detector
        if det is not None and det not in detectors:
            raise UserError(f"face_detector {det!r}: expected one of {', '.join(detectors)}")
        if out["threshold"] is not None:
            parse_threshold(out["threshold"], "threshold", operating_points, typed=True)
    except UserError as exc:
        raise BadUpload(422, f"form field {one_line(exc)}") from None
    return out


def settings_form(detectors, operating_points):
    """A FastAPI dependency: the fields of ``FORM`` (optional text, described in the API's
    schema) -> the job's settings (``parse_settings``)."""
    def settings(**form):
        return parse_settings(form, detectors, operating_points)
    settings.__signature__ = inspect.Signature([
        inspect.Parameter(key.path, inspect.Parameter.KEYWORD_ONLY, annotation=str | None,
                          default=Form(None, description=key.doc)) for key in FORM])
    return settings


def view(job):
    """A job as the API answers it."""
    x = job.get("extra") or {}
    out = {k: job[k] for k in ("id", "name", "kind", "state", "created", "started", "finished",
                               "progress", "error", "settings")}
    # the record once done, and while the evidence of a scored job is being made
    out["result"] = job["result"] if job["state"] in ("done", "running") else None
    out.update({k: x.get(k) for k in ("threshold", "threshold_source", "persons", "heat_maps",
                                      "files", "model", "seconds")})
    base = f"/api/jobs/{job['id']}"
    out["links"] = {name: f"{base}/{name}" for name in DOWNLOADS} if job["state"] == "done" \
        else {}
    if job["state"] == "done":
        for f in x.get("files") or []:
            out["links"][f] = f"{base}/files/{f}"
    return out


def create_app(data, model_info, *, token=None, host="127.0.0.1", max_upload_mb=500,
               max_seconds=600, workers=None, detectors=("dlib",)):
    """The app over the job store in ``data``. ``workers``: the pool that scores (its ``alive()``
    answers /api/health; None: jobs are run elsewhere, e.g. by a test's thread). A ``token``
    is required of every request (header ``Authorization: Bearer <token>``, the query parameter
    ``token``, or the cookie the page gets); a host that is not a loopback address needs one."""
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: a non-loopback address needs --token (anyone on the "
                        "network could use the page)")
    store = data if isinstance(data, JobStore) else JobStore(data)
    interrupted = store.interrupt_running()
    calibration = model_info.get("calibration")
    # the operating points the checkpoint's calibration names (none without a calibration)
    named = calibration.get("points") if isinstance(calibration, dict) else None
    from model.calibration import POINT_NAMES
    points = tuple(p for p in POINT_NAMES if p in (named or {}))
    app = FastAPI(title="RECCE: a page for a verdict",
                  description="Upload photos and videos, follow their scoring, read the verdicts "
                              "and their evidence. Every route needs the token when the server "
                              "was started with one.",
                  docs_url=None, redoc_url=None)  # below, from local files: no CDN
    app.state.store, app.state.interrupted = store, interrupted
    app.state.workers = workers
    limit = int(max_upload_mb * MB)

    def authorised(request):
        if not token:
            return True
        given = request.headers.get("authorization", "")
        given = given[7:] if given.lower().startswith("bearer ") else ""
        for value in (given, request.query_params.get("token", ""),
                      request.cookies.get(TOKEN_COOKIE, "")):
            if value and hmac.compare_digest(value.encode(), token.encode()):
                return True
        return False

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if not authorised(request):
            return JSONResponse({"detail": "a token is needed: open the page as /?token=TOKEN or "
                                           "send Authorization: Bearer TOKEN"}, status_code=401)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit * MAX_FILES + MB:
            return JSONResponse({"detail": f"an upload of {int(length) / MB:.0f} MB: more than "
                                           f"{MAX_FILES} files of {max_upload_mb:g} MB "
                                           "(--max_upload_mb)"}, status_code=413)
        response = await call_next(request)
        if token and request.query_params.get("token") and request.url.path == "/":
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(os.path.join(STATIC, "index.html"),
                            headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount(DOCS_ASSETS, StaticFiles(directory=docs_assets()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger(request: Request):
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(openapi_url=root + app.openapi_url,
                                   title=f"{app.title}: the HTTP API",
                                   swagger_js_url=f"{root}{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{root}{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{root}/static/favicon.svg")

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request):
        root = request.scope.get("root_path", "")
        return get_redoc_html(openapi_url=root + app.openapi_url,
                              title=f"{app.title}: the HTTP API",
                              redoc_js_url=f"{root}{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{root}/static/favicon.svg",
                              with_google_fonts=False)

    @app.get("/api/health")
    def health():
        """The server answers; its workers, and how many jobs wait or run."""
        jobs = store.list()
        pool = app.state.workers
        alive = pool.alive() if pool is not None else None
        return {"status": "ok", "workers": alive,
                "queued": sum(j["state"] == "queued" for j in jobs),
                "running": sum(j["state"] == "running" for j in jobs)}

    @app.get("/api/model")
    def model():
        """The detector, the checkpoint, its input spec and calibration, the settings a job
        takes and their defaults."""
        from faces.finders.base import MIN_FACE_SCORE
        from faces.video import FRAMES
        return dict(model_info, operating_points=list(points), face_detectors=list(detectors),
                    defaults={"frames": FRAMES, "min_face_score": {
                        d: MIN_FACE_SCORE.get(d) for d in detectors}},
                    max_upload_mb=max_upload_mb, max_seconds=max_seconds)

    @app.exception_handler(BadUpload)
    def refused(request: Request, exc: BadUpload):
        """A bad setting or upload: its status and reason, the one message the page shows."""
        return JSONResponse({"detail": exc.reason}, status_code=exc.status)

    @app.post("/api/jobs", status_code=201)
    def create_jobs(files: list[UploadFile] = File(..., description="photos and videos"),
                    settings: dict = Depends(settings_form(detectors, points))):
        """One job per file: ``{"jobs": [{"id": ...}, ...]}``; a bad setting, or a file that is
        not a photo or a video, too large or too long, refuses the request (4xx with the
        reason), and no job is made of it."""
        if len(files) > MAX_FILES:
            raise BadUpload(413, f"{len(files)} files: at most {MAX_FILES} a request")
        made, errors = [], []
        for upload in files:
            name = os.path.basename((upload.filename or "upload").replace("\\", "/"))[:200] \
                or "upload"
            job_id = new_id()
            folder = store.make_folder(job_id)
            made.append((job_id, name, folder))
            try:
                kind, ext = _receive(upload, folder, limit, max_upload_mb, max_seconds)
                made[-1] += (kind, ext)
            except BadUpload as exc:
                errors.append((exc.status, f"{name}: {exc.reason}"))
            except OSError as exc:
                errors.append((507, f"{name}: cannot store the upload ({one_line(exc)})"))
        if errors:
            for job_id, *_ in made:
                store.remove_folder(job_id)
            raise HTTPException(max(s for s, _ in errors), "; ".join(r for _, r in errors))
        jobs = [store.create(job_id, name, kind, "input" + ext, settings)
                for job_id, name, folder, kind, ext in made]
        return {"jobs": [view(j) for j in jobs]}

    @app.get("/api/jobs")
    def list_jobs():
        """Every job, newest first."""
        return {"jobs": [view(j) for j in store.list()]}

    def job_or_404(job_id):
        job = store.get(job_id) if valid_id(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job

    @app.get("/api/jobs/{job_id}")
    def get_job(job_id: str):
        """A job: ``state`` (queued, running, done, failed, cancelled, interrupted),
        ``progress``, ``error``, and when done ``result``: the record."""
        return view(job_or_404(job_id))

    @app.delete("/api/jobs/{job_id}")
    def delete_job(job_id: str):
        """Cancel a queued or running job; delete a finished one with its files."""
        job = job_or_404(job_id)
        if job["state"] in ("queued", "running"):
            store.cancel(job_id)
            return {"id": job_id, "state": "cancelled", "deleted": False}
        if not store.delete(job_id):
            raise HTTPException(409, f"job {job_id} is still stopping: try again in a moment")
        return {"id": job_id, "deleted": True}

    @app.post("/api/jobs/{job_id}/rerun")
    def rerun_job(job_id: str):
        """Run a failed, cancelled or interrupted job again (its upload is kept)."""
        job = job_or_404(job_id)
        if job["state"] not in FINISHED or job["state"] == "done":
            raise HTTPException(409, f"job {job_id} is {job['state']}: only a failed, cancelled "
                                     "or interrupted job runs again")
        out = os.path.join(store.folder(job_id), OUT)
        if not store.rerun(job_id):
            raise HTTPException(409, f"job {job_id} is still stopping: try again in a moment")
        if os.path.isdir(out) and not os.path.islink(out):
            shutil.rmtree(out)  # the job's own outputs of the run that did not finish
        return view(store.get(job_id))

    def job_file(job_id, name):
        job = job_or_404(job_id)
        if job["state"] != "done":
            raise HTTPException(409, f"job {job_id} is {job['state']}: its files come when it "
                                     "is done")
        listed = (job.get("extra") or {}).get("files") or []
        if not NAME.match(name) or name not in listed:
            raise HTTPException(404, f"job {job_id} has no file {name!r}")
        out = os.path.realpath(os.path.join(store.folder(job_id), OUT))
        path = os.path.realpath(os.path.join(out, name))
        if os.path.dirname(path) != out or not os.path.isfile(path):
            raise HTTPException(404, f"job {job_id} has no file {name!r}")
        return job, path

    for route, media_type in DOWNLOADS.items():
        def download(job_id: str, _route=route, _type=media_type):
            job, path = job_file(job_id, SOURCE_FILES[_route])
            stem = os.path.splitext(job["name"])[0] or "job"
            ascii_stem = re.sub(r"[^A-Za-z0-9_.-]", "_", stem)[:80]
            return FileResponse(path, media_type=_type,
                                filename=f"{ascii_stem}_{_route}")
        app.get(f"/api/jobs/{{job_id}}/{route}", name=f"download {route}",
                summary=f"The job's {route}")(download)

    @app.get("/api/jobs/{job_id}/files/{name}")
    def get_file(job_id: str, name: str):
        """A file of a done job's evidence (the annotated video, the timeline, a heat map), by
        the name its ``files`` lists."""
        _, path = job_file(job_id, name)
        return FileResponse(path)

    app.state.started = time.time()
    return app


def _receive(upload, folder, limit, max_upload_mb, max_seconds):
    """Copy an upload into its job's folder (refused past ``limit`` bytes), then decide what it
    is by its content; returns (kind, extension), the file renamed ``input<extension>``."""
    dest = os.path.join(folder, "upload.part")
    size = 0
    with open(dest, "wb") as fh:
        while True:
            chunk = upload.file.read(MB)
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise BadUpload(413, f"larger than the limit of {max_upload_mb:g} MB "
                                     "(--max_upload_mb)")
            fh.write(chunk)
    if size == 0:
        raise BadUpload(415, "an empty file: not a photo or a video")
    kind, ext, _ = probe(dest, max_seconds)
    os.replace(dest, os.path.join(folder, "input" + ext))
    return kind, ext
