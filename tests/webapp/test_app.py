"""The page's server (serve.py, webapp/): every route of the HTTP API through FastAPI's test
client, every bad input (not a photo or video, too large, too long, bad settings, path traversal,
no token), deleting, cancelling, a failing job, a restart mid-job; the records equal the Python
API's for the same files. Jobs are scored by the worker loop in a thread of the test (the worker
process is the same loop: the browser test and the slow test here run real processes)."""
import csv
import io
import json
import os
import re
import signal
import sys
import time

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("multipart")
pytest.importorskip("dlib")

from helpers import ROOT, cli, free_port, people_video, portrait_photo, start_server


@pytest.fixture(scope="module")
def files(tmp_path_factory, make_checkpoint):
    d = tmp_path_factory.mktemp("serve_files")
    return {"ckpt": make_checkpoint(d / "best_model_1.bin", config={"model": {"name": "Recce"}},
                                    spec=48),
            "video": people_video(d / "two people.avi"),
            "photo": portrait_photo(d / "portrait.jpg"),
            "text": str(d / "notes.mp4")}


@pytest.fixture(scope="module")
def predictors(files):
    from webapp.worker import Predictors
    return Predictors(files["ckpt"])


@pytest.fixture(scope="module")
def info(files, predictors):
    import serve
    return serve.model_info(predictors.get(None), files["ckpt"])


class Server:
    """An app over a data folder, its test client and a worker thread."""

    def __init__(self, data, predictors, info, **kwargs):
        from fastapi.testclient import TestClient

        from webapp.app import create_app
        from webapp.store import JobStore
        from webapp.worker import start_thread
        self.store = JobStore(str(data))
        self.app = create_app(self.store, info, **kwargs)
        self.client = TestClient(self.app)
        self.predictors, self.info = predictors, info
        self.thread = self.stop = None
        self.start_thread = start_thread

    def run(self):
        self.thread, self.stop = self.start_thread(self.store, self.predictors, self.info)
        return self

    def close(self):
        if self.stop is not None:
            self.stop.set()
            self.thread.join(60)
        self.client.close()

    def post(self, *paths, **form):
        handles = [open(p, "rb") for p in paths]
        try:
            return self.client.post("/api/jobs", data=form, files=[
                ("files", (os.path.basename(p), h, "application/octet-stream"))
                for p, h in zip(paths, handles)])
        finally:
            for h in handles:
                h.close()

    def wait(self, job_id, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"/api/jobs/{job_id}").json()
            if job["state"] not in ("queued", "running"):
                return job
            time.sleep(0.05)
        raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.fixture()
def server(tmp_path, predictors, info):
    s = Server(tmp_path / "data", predictors, info)
    yield s
    s.close()


@pytest.fixture(scope="module")
def done(tmp_path_factory, files, predictors, info):
    """A server with a two-person video and a photo scored (4 frames)."""
    s = Server(tmp_path_factory.mktemp("done") / "data", predictors, info).run()
    r = s.post(files["video"], files["photo"], frames="4")
    assert r.status_code == 201, r.text
    ids = [j["id"] for j in r.json()["jobs"]]
    jobs = [s.wait(i) for i in ids]
    yield s, jobs
    s.close()


@pytest.mark.slow
def test_jobs_score_as_the_python_api_and_every_download_says_the_same(done, files, predictors):
    s, (video, pic) = done
    assert video["state"] == "done" and pic["state"] == "done", (video["error"], pic["error"])
    assert video["name"] == "two people.avi" and video["kind"] == "video"
    assert pic["name"] == "portrait.jpg" and pic["kind"] == "photo"
    pred = predictors.get(None)
    ref_video = pred.predict_video(files["video"], frames=4)
    ref_photo = pred.predict_photo(files["photo"])
    for job, ref in ((video, ref_video), (pic, ref_photo)):
        got = job["result"]
        assert set(got) == set(ref)  # the one schema of the Python API
        assert got["fake_probability"] == pytest.approx(ref["fake_probability"], abs=1e-6)
        for key in ("kind", "prediction", "frames_or_faces", "tracks", "track", "persons", "error"):
            assert got[key] == ref[key], key
        assert [f["fake_probability"] for f in got["faces"]] == \
            pytest.approx([f["fake_probability"] for f in ref["faces"]], abs=1e-6)
        # the uploaded file is kept under the job's id, never under its own name
        assert os.path.dirname(got["path"]) == s.store.folder(job["id"])
        assert os.path.basename(got["path"]).startswith("input.")
    assert video["result"]["persons"] == 2 and video["result"]["frames_or_faces"] == 4
    assert video["threshold"] == 0.5 and video["progress"]["done"] == 4
    assert video["progress"]["total"] == 4
    persons = video["persons"]
    assert [p["decides"] for p in persons] == [True, False]
    assert persons[0]["track"] == video["result"]["track"]
    assert persons[0]["fake_probability"] == pytest.approx(video["result"]["fake_probability"])
    assert set(video["heat_maps"]) == {"0", "1"}
    assert {"video_annotated.mp4", "video_timeline.png", "face_0.png", "face_1.png",
            "report.pdf", "report.html"} <= set(video["files"])
    assert "photo_annotated.png" in pic["files"]
    base = f"/api/jobs/{video['id']}"
    r = s.client.get(f"{base}/report.json")
    assert r.status_code == 200 and r.json() == video["result"]
    rows = list(csv.DictReader(io.StringIO(s.client.get(f"{base}/records.csv").text)))
    assert len(rows) == 1 and float(rows[0]["fake_probability"]) == \
        pytest.approx(video["result"]["fake_probability"], abs=1e-6)
    faces = list(csv.DictReader(io.StringIO(s.client.get(f"{base}/faces.csv").text)))
    assert len(faces) == 8 and {r["track"] for r in faces} == {"0", "1"}
    pdf = s.client.get(f"{base}/report.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    page = s.client.get(f"{base}/report.html").text
    assert "two people.avi" in page and "data:image/png;base64," in page
    assert f"{video['result']['fake_probability']:.4f}" in page
    assert "src='http" not in page and 'src="http' not in page  # self-contained
    mp4 = s.client.get(f"{base}/files/video_annotated.mp4")
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    png = s.client.get(f"{base}/files/face_1.png")
    assert png.content.startswith(b"\x89PNG")
    listed = s.client.get("/api/jobs").json()["jobs"]
    assert {j["id"] for j in listed} == {video["id"], pic["id"]}


def test_health_model_page_and_openapi(done, files):
    s, _ = done
    h = s.client.get("/api/health").json()
    assert h["status"] == "ok" and h["queued"] == 0 and h["running"] == 0
    m = s.client.get("/api/model").json()
    assert m["detector"] and m["input_spec"]["size"] == [48, 48]
    assert m["checkpoint"] == files["ckpt"] and m["calibration"] is None  # as given
    assert m["checkpoint_path"] == os.path.abspath(files["ckpt"])
    assert m["operating_points"] == [] and m["face_detectors"] == ["dlib"]
    assert (m["backend"], m["precision"]) == ("torch", "fp32")
    page = s.client.get("/")
    assert page.status_code == 200 and "<html" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert s.client.get(asset).status_code == 200, asset
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    paths = s.client.get("/openapi.json").json()["paths"]
    for route in ("/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/report.pdf",
                  "/api/jobs/{job_id}/report.html", "/api/jobs/{job_id}/report.json",
                  "/api/health", "/api/model"):
        assert route in paths, route
    assert set(paths["/api/jobs/{job_id}"]) == {"get", "delete"}


def test_a_photo_reads_as_persons_and_paths_read_as_given(done, files, predictors):
    """A photo's result counts persons, one per face (never "face tracks / persons 1 / 0"); a
    video's keeps its tracks and the persons among them. The checkpoint is shown as it was
    given: an absolute path whole, leading "/" included, a relative one relative."""
    import html

    import serve
    s, (video, pic) = done
    faces = pic["result"]["frames_or_faces"]
    assert faces >= 1 and pic["result"]["persons"] == faces  # one person a face, in the record too
    page = html.unescape(s.client.get(f"/api/jobs/{pic['id']}/report.html").text)
    assert f"<tr><th>persons (one per face)</th><td>{faces}</td></tr>" in page
    assert "face tracks / persons" not in page
    page = html.unescape(s.client.get(f"/api/jobs/{video['id']}/report.html").text)
    assert "<tr><th>face tracks / persons</th><td>2 / 2</td></tr>" in page
    assert "persons (one per face)" not in page
    assert os.path.isabs(files["ckpt"])
    assert f"<tr><th>checkpoint</th><td>{files['ckpt']}</td></tr>" in page
    pdf = s.client.get(f"/api/jobs/{pic['id']}/report.pdf")
    assert pdf.status_code == 200
    relative = os.path.relpath(files["ckpt"])
    info = serve.model_info(predictors.get(None), relative)
    assert info["checkpoint"] == relative and info["checkpoint_path"] == files["ckpt"]
    # the page's script shows the path it is given, whole, and a photo's persons
    script = s.client.get("/static/app.js").text
    assert 'const ckpt = model.checkpoint || "";' in script
    assert '["persons (one per face)", r.frames_or_faces]' in script


@pytest.mark.parametrize("route", ["/docs", "/redoc"])
def test_the_api_docs_come_from_this_server_only(done, route):
    """/docs (Swagger UI) and /redoc name no other host: every script, style sheet and icon is a
    path of this server, and each answers 200 with its content."""
    from html.parser import HTMLParser
    s, _ = done
    page = s.client.get(route)
    assert page.status_code == 200 and "<html" in page.text

    class Links(HTMLParser):
        found = []

        def handle_starttag(self, tag, attrs):
            self.found += [v for k, v in attrs if k in ("src", "href", "spec-url") and v]
    links = Links()
    links.found = []
    links.feed(page.text)
    assert not re.search(r"https?://|(?<![\w:])//[\w.-]", page.text), page.text
    assert len(links.found) >= 2
    for url in links.found:
        assert url.startswith("/"), url
        got = s.client.get(url)
        assert got.status_code == 200 and len(got.content) > 0, url
    spec = s.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    if route == "/docs":  # Swagger UI 5 or newer: it renders OpenAPI 3.1, which FastAPI writes
        script = next(u for u in links.found if u.endswith(".js"))
        assert "isOAS31" in s.client.get(script).text


def _only_jobs(store):
    return sorted(os.listdir(store.jobs_dir))


def test_a_file_that_is_not_a_photo_or_video_is_refused_with_its_reason(server, files, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all")
    r = server.post(str(text))
    assert r.status_code == 415
    assert r.json()["detail"] == \
        "notes.mp4: not a photo or a video (no image or video decoder opens it)"
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    r = server.post(str(empty))
    assert r.status_code == 415 and "empty.jpg: an empty file" in r.json()["detail"]
    # a request is refused whole: the good video of it makes no job either
    r = server.post(files["video"], str(text))
    assert r.status_code == 415 and "notes.mp4" in r.json()["detail"]
    assert server.client.get("/api/jobs").json()["jobs"] == [] and _only_jobs(server.store) == []
    r = server.client.post("/api/jobs", data={"frames": "4"})
    assert r.status_code == 422  # no file at all
    # and the server goes on: the next upload is a job
    assert server.post(files["photo"]).status_code == 201


def test_size_and_length_limits(tmp_path, files, predictors, info):
    s = Server(tmp_path / "a", predictors, info, max_upload_mb=0.01)
    try:
        r = s.post(files["video"])
        assert r.status_code == 413
        assert r.json()["detail"] == \
            "two people.avi: larger than the limit of 0.01 MB (--max_upload_mb)"
        assert _only_jobs(s.store) == []
    finally:
        s.close()
    s = Server(tmp_path / "b", predictors, info, max_seconds=0.3)
    try:
        r = s.post(files["video"])  # 6 frames at 10 fps: 0.6 s
        assert r.status_code == 422
        assert r.json()["detail"] == ("two people.avi: a video of 1 s, longer than the limit of "
                                      "0.3 s (--max_seconds)")
        assert s.post(files["photo"]).status_code == 201  # a photo has no length
    finally:
        s.close()


def _png_bomb(path, side):
    """A single-colour PNG of side x side pixels (under 1 MB): 16 rows are compressed once,
    behind a full flush (which resets the compressor, so every block of 16 rows compresses to the
    same bytes), and repeated."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    row = b"\x00" + b"\x80" * (side * 3)
    rows, blocks = 16, (side - 1) // 16  # blocks of 16 rows, then the rest
    z = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the zlib frame is written here
    block = z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH)
    assert z.compress(row * rows) + z.flush(zlib.Z_FULL_FLUSH) == block
    last = z.compress(row * (side - rows * blocks)) + z.flush(zlib.Z_FINISH)
    check = 1
    for _ in range(side):
        check = zlib.adler32(row, check)
    data = b"\x78\xda" + block * blocks + last + struct.pack(">I", check)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8,
                                                                       2, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return str(path)


def _jpeg_bomb(path, side):
    """A small JPEG whose frame header claims side x side pixels."""
    ok, buf = cv2.imencode(".jpg", np.full((16, 16, 3), 128, np.uint8))
    data = bytearray(buf.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = side.to_bytes(2, "big") + side.to_bytes(2, "big")
    path.write_bytes(bytes(data))
    return str(path)


# Requests, each to a new page over its own data folder, in one new process: how far each
# raised the peak resident memory (which only grows) above what the process held before the first.
_PEAK = """
import json, resource, sys
sys.path.insert(0, sys.argv[1])
from fastapi.testclient import TestClient
from webapp.app import create_app
from webapp.store import JobStore
out, before = [], None
for data, paths in json.loads(sys.argv[2]):
    client = TestClient(create_app(JobStore(data), {"detector": "x", "checkpoint": "c",
                                                    "threshold": 0.5, "calibration": None}))
    client.get("/api/health")
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    handles = [open(p, "rb") for p in paths]
    r = client.post("/api/jobs", files=[("files", (f"f{i}", h, "application/octet-stream"))
                                        for i, h in enumerate(handles)])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out.append({"status": r.status_code, "detail": r.json().get("detail"),
                "grew_mb": (after - before) / 1024})
print(json.dumps(out))
"""


def _request_peaks(tmp_path, requests):
    script = tmp_path / "peak.py"
    script.write_text(_PEAK)
    out = cli([str(script), str(ROOT), json.dumps(requests)], timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_picture_bombs_are_refused_from_their_header_with_bounded_memory(tmp_path):
    """A picture whose header states more pixels than the limit is refused (413, with the reason)
    before any decoder reads it: never taken for a video (whose decoder would decode the whole
    picture to open it: 0.7 GB for 16000 x 16000). The server's peak memory grows no more for a
    bomb, or for twenty in one request, than for one ordinary photo, give or take 96 MB: the
    uploads themselves take some 30 MB, the smallest bomb decoded would take 243 MB."""
    photo = tmp_path / "photo.png"
    cv2.imwrite(str(photo), np.full((1200, 1600, 3), 100, np.uint8))
    sides = (9000, 20000)
    bombs = [_png_bomb(tmp_path / "big.png", 9000), _jpeg_bomb(tmp_path / "big.jpg", 20000)]
    ordinary, *refused = _request_peaks(tmp_path,
        [[str(tmp_path / "a"), [str(photo)]]]
        + [[str(tmp_path / f"b{side}"), [bomb]] for side, bomb in zip(sides, bombs)])
    assert ordinary["status"] == 201
    for side, r in zip(sides, refused):
        assert r["status"] == 413, r
        assert r["detail"] == (f"f0: a picture of {side} x {side} pixels, more than the limit of "
                               "64,000,000 (max_pixels)")
        assert r["grew_mb"] <= ordinary["grew_mb"] + 96
    huge = _png_bomb(tmp_path / "huge.png", 16000)
    many, = _request_peaks(tmp_path, [[str(tmp_path / "c"), [huge] * 20]])
    assert many["status"] == 413 and "16000 x 16000 pixels" in many["detail"]
    assert many["grew_mb"] <= ordinary["grew_mb"] + 96
    from webapp.store import JobStore
    assert JobStore(str(tmp_path / "c")).list() == []  # the request was refused whole: no job
    assert os.listdir(tmp_path / "c" / "jobs") == []  # and no upload kept


@pytest.mark.parametrize("form,words", [
    ({"frames": "0"}, ("form field frames", "0")),
    ({"frames": "abc"}, ("form field frames", "abc")),
    ({"every": "-2"}, ("form field every", "-2")),
    ({"frames": "4", "every": "2"}, ("form field frames and every", "give one")),
    ({"min_face_score": "nan"}, ("form field min_face_score", "nan")),
    ({"threshold": "1.5"}, ("form field threshold 1.5", "[0, 1]")),
    ({"threshold": "eer"}, ("form field threshold 'eer'", "no calibration")),
    ({"face_detector": "../x"}, ("form field face_detector '../x'", "dlib")),
])
def test_bad_settings_are_refused_naming_the_field(server, files, form, words):
    r = server.post(files["photo"], **form)
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith(words[0]) and words[1] in detail, detail
    assert _only_jobs(server.store) == []


def test_no_route_serves_anything_outside_the_job_folders(done, tmp_path):
    s, (video, _) = done
    secret = "SENTINEL-outside"
    (tmp_path / "secret.txt").write_text(secret)
    data = s.store.data
    with open(os.path.join(data, "beside.txt"), "w") as fh:
        fh.write(secret)
    with open(os.path.join(s.store.folder(video["id"]), "out", ".hidden"), "w") as fh:
        fh.write(secret)
    jid = video["id"]
    rel = os.path.relpath(tmp_path / "secret.txt", os.path.join(data, "jobs", jid, "out"))
    tries = [f"/api/jobs/{jid}/files/..%2F..%2F..%2Fbeside.txt",
             f"/api/jobs/{jid}/files/..%2Finput.video",
             f"/api/jobs/{jid}/files/%2E%2E%2F%2E%2E%2Fjobs.sqlite3",
             f"/api/jobs/{jid}/files/.hidden",
             f"/api/jobs/{jid}/files/{rel.replace('/', '%2F')}",
             f"/api/jobs/{jid}/files/input.video",
             "/api/jobs/..%2F..%2Fbeside.txt/report.json",
             "/api/jobs/../../beside.txt",
             "/api/jobs/%2E%2E/report.pdf",
             f"/api/jobs/{jid}%2F..%2F../report.json",
             "/static/..%2F..%2Fserve.py",
             "/static/../../serve.py",
             f"/api/jobs/{jid}/files/{tmp_path}/secret.txt".replace("//", "/")]
    for url in tries:
        r = s.client.get(url)
        assert r.status_code in (400, 404, 405), (url, r.status_code)
        assert secret not in r.text and "import" not in r.text[:200], url
    link = os.path.join(s.store.folder(jid), "out", "link.txt")  # a link planted in the folder
    os.symlink(tmp_path / "secret.txt", link)
    try:
        assert s.client.get(f"/api/jobs/{jid}/files/link.txt").status_code == 404
    finally:
        os.remove(link)
    assert s.client.get("/api/jobs/" + "f" * 32).status_code == 404


def test_a_non_loopback_host_needs_a_token_and_every_route_asks_for_it(tmp_path, predictors,
                                                                         info, files):
    from errors import UserError
    from webapp.app import create_app
    with pytest.raises(UserError, match="--host 0.0.0.0: a non-loopback address needs --token"):
        create_app(str(tmp_path / "x"), info, host="0.0.0.0")
    s = Server(tmp_path / "data", predictors, info, host="0.0.0.0", token="s3cret-token")
    try:
        c = s.client
        for url in ("/", "/static/app.js", "/api/health", "/api/model", "/api/jobs",
                    "/openapi.json", "/api/jobs/" + "a" * 32 + "/report.pdf"):
            r = c.get(url)
            assert r.status_code == 401, url
            assert "token" in r.json()["detail"]
            assert c.get(url, headers={"Authorization": "Bearer wrong-token"}).status_code == 401
        assert s.post(files["photo"]).status_code == 401 and _only_jobs(s.store) == []
        assert c.delete("/api/jobs/" + "a" * 32).status_code == 401
        good = {"Authorization": "Bearer s3cret-token"}
        assert c.get("/api/health", headers=good).status_code == 200
        assert c.get("/api/health?token=s3cret-token").status_code == 200
        # the page opened with the token gets it as a cookie: its own requests then carry it
        r = c.get("/?token=s3cret-token")
        assert r.status_code == 200 and "recce_token" in r.headers["set-cookie"]
        assert "httponly" in r.headers["set-cookie"].lower()
        assert c.get("/api/jobs").status_code == 200
        c.cookies.clear()
        assert c.get("/api/jobs").status_code == 401
    finally:
        s.close()


def test_deleting_a_job_removes_its_folder_and_nothing_else(server, files, tmp_path):
    server.run()
    ids = [j["id"] for j in server.post(files["photo"], files["photo"]).json()["jobs"]]
    for i in ids:
        assert server.wait(i)["state"] == "done"
    keep, gone = ids
    data = server.store.data
    sentinels = [os.path.join(data, "mine.txt"), os.path.join(data, "jobs", "notes.txt"),
                 os.path.join(server.store.folder(keep), "sentinel.txt"),
                 str(tmp_path / "outside.txt")]
    other = os.path.join(data, "jobs", "not-a-job")
    os.makedirs(other)
    sentinels.append(os.path.join(other, "x.txt"))
    for p in sentinels:
        with open(p, "w") as fh:
            fh.write("keep")
    r = server.client.delete(f"/api/jobs/{gone}")
    assert r.status_code == 200 and r.json() == {"id": gone, "deleted": True}
    assert not os.path.exists(server.store.folder(gone))
    assert server.client.get(f"/api/jobs/{gone}").status_code == 404
    assert server.client.get(f"/api/jobs/{gone}/report.pdf").status_code == 404
    assert all(open(p).read() == "keep" for p in sentinels)
    assert server.client.get(f"/api/jobs/{keep}").json()["state"] == "done"
    assert os.path.isfile(os.path.join(server.store.folder(keep), "out", "report.pdf"))
    assert server.client.delete(f"/api/jobs/{gone}").status_code == 404
    assert server.client.delete("/api/jobs/..").status_code in (404, 405)
    assert server.client.delete("/api/jobs/not-a-job").status_code == 404
    assert os.path.isfile(os.path.join(other, "x.txt"))
    # a job folder replaced by a link: the link goes, never what it points to
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "precious.txt").write_text("keep")
    import shutil
    shutil.rmtree(server.store.folder(keep))
    os.symlink(target, server.store.folder(keep))
    assert server.client.delete(f"/api/jobs/{keep}").json()["deleted"] is True
    assert (target / "precious.txt").read_text() == "keep"


@pytest.mark.slow
def test_cancel_a_queued_and_a_running_job(server, files, monkeypatch):
    import webapp.worker as worker
    ids = [j["id"] for j in server.post(files["video"], files["video"], frames="6").json()["jobs"]]
    first, second = ids
    monkeypatch.setattr(worker, "PROGRESS_EVERY", 0.0)  # the state is read back before every frame
    set_progress = server.store.set_progress

    def cancel_after_two_frames(job_id, progress):
        set_progress(job_id, progress)
        if job_id == first and progress["done"] == 2:
            r = server.client.delete(f"/api/jobs/{first}")
            assert r.json() == {"id": first, "state": "cancelled", "deleted": False}
    monkeypatch.setattr(server.store, "set_progress", cancel_after_two_frames)
    r = server.client.delete(f"/api/jobs/{second}")  # still queued
    assert r.json()["state"] == "cancelled"
    server.run()
    job = server.wait(first)
    assert job["state"] == "cancelled" and job["error"] == "cancelled by the user"
    assert job["result"] is None and job["progress"]["done"] == 2
    server.stop.set()
    server.thread.join(60)
    assert server.client.get(f"/api/jobs/{second}").json()["started"] is None  # never ran
    # a cancelled job runs again with one click, and then to the end
    monkeypatch.setattr(server.store, "set_progress", set_progress)
    r = server.client.post(f"/api/jobs/{first}/rerun")
    assert r.status_code == 200 and r.json()["state"] == "queued"
    server.run()
    assert server.wait(first)["state"] == "done"
    assert server.client.post(f"/api/jobs/{first}/rerun").status_code == 409  # done: no rerun


def test_a_failing_job_is_failed_with_its_reason_and_the_next_one_runs(server, files,
                                                                        monkeypatch):
    import errno
    calls = {"n": 0}
    original = server.predictors.get

    def full_disk_once(threshold):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(threshold)
    monkeypatch.setattr(server.predictors, "get", full_disk_once)
    ids = [j["id"] for j in server.post(files["photo"], files["photo"]).json()["jobs"]]
    server.run()
    first, second = (server.wait(i) for i in ids)
    assert first["state"] == "failed" and first["error"] == "[Errno 28] No space left on device"
    assert second["state"] == "done"
    assert server.client.get(f"/api/jobs/{ids[0]}/report.pdf").status_code == 409


@pytest.mark.slow
def test_a_restart_marks_a_running_job_interrupted_and_keeps_the_history(tmp_path, files,
                                                                         predictors, info):
    s = Server(tmp_path / "data", predictors, info).run()
    done_id = s.post(files["photo"]).json()["jobs"][0]["id"]
    assert s.wait(done_id)["state"] == "done"
    s.close()
    s = Server(tmp_path / "data", predictors, info)
    job_id = s.post(files["video"], frames="4").json()["jobs"][0]["id"]
    queued_id = s.post(files["photo"]).json()["jobs"][0]["id"]
    assert s.store.claim(worker=999999)["id"] == job_id  # a worker took it; then the server died
    s.client.close()
    s = Server(tmp_path / "data", predictors, info)  # the next start
    assert s.app.state.interrupted == 1
    jobs = {j["id"]: j for j in s.client.get("/api/jobs").json()["jobs"]}
    assert jobs[job_id]["state"] == "interrupted"
    assert jobs[job_id]["error"] == "the server stopped while this job ran"
    assert jobs[done_id]["state"] == "done" and jobs[done_id]["result"]["fake_probability"]
    assert jobs[queued_id]["state"] == "queued"  # waits for the new workers
    assert s.client.get(f"/api/jobs/{done_id}/report.pdf").status_code == 200
    assert s.client.post(f"/api/jobs/{job_id}/rerun").json()["state"] == "queued"
    s.run()
    assert s.wait(job_id)["state"] == "done" and s.wait(queued_id)["state"] == "done"
    s.close()


def test_serve_py_says_one_line_for_what_a_user_can_get_wrong(tmp_path, monkeypatch, capsys):
    import serve
    monkeypatch.chdir(tmp_path)
    assert serve.main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: no checkpoint under runs/: run `python train.py` first (or give "
                   "--checkpoint FILE)"]
    assert serve.main(["--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --host 0.0.0.0: a non-loopback address "
                                               "needs --token")
    assert serve.main(["--checkpoint", "missing.bin"]) == 2
    assert capsys.readouterr().err.strip() == "error: --checkpoint missing.bin: no such file"
    assert serve.main(["--workers", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --workers 0: expected 1 to 64"
    assert serve.main(["--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == ("error: --threads: expected a number of threads "
                                               "from 1 to 1024, got 0")
    monkeypatch.setitem(sys.modules, "fastapi_offline", None)  # the files of /docs missing
    assert serve.main(["--checkpoint", "missing.bin"]) == 2
    assert capsys.readouterr().err.strip() == ("error: the page needs fastapi_offline: pip "
                                               "install -r requirements-serve.txt")
    (tmp_path / "runs" / "Recce" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "Recce" / "b").mkdir(parents=True)
    for name in ("a/best_model_3.bin", "a/best_model_10.bin", "b/best_model_1.bin"):
        (tmp_path / "runs" / "Recce" / name).write_bytes(b"x")
    os.utime(tmp_path / "runs/Recce/b/best_model_1.bin", (1, 1))
    assert serve.newest_checkpoint() == os.path.join("runs", "Recce", "a", "best_model_10.bin")


def _get(port, path):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def _upload(port, path, **form):
    import httpx
    with open(path, "rb") as fh:
        r = httpx.post(f"http://127.0.0.1:{port}/api/jobs", data=form,
                       files=[("files", (os.path.basename(path), fh))], timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["jobs"][0]["id"]


def _wait(port, job_id, states=("done", "failed", "cancelled", "interrupted"), timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _get(port, f"/api/jobs/{job_id}")
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id}: {job['state']}")


@pytest.mark.slow
def test_serve_py_a_killed_worker_fails_its_job_and_a_killed_server_leaves_it_interrupted(
        files, tmp_path):
    """The real processes: serve.py prints its address; a worker killed mid-job fails that job
    with the reason and another worker takes the next; the server killed mid-job: on the next
    start the job is interrupted and the history is whole."""
    long_video = people_video(tmp_path / "long.avi", frames=120, faces=1)
    port, data = free_port(), tmp_path / "data"
    proc = start_server(files["ckpt"], data, port)
    try:
        second = cli(["serve.py", "--checkpoint", files["ckpt"], "--data", str(data), "--port",
                      str(free_port())], timeout=120)
        assert second.returncode == 2  # one server per data folder
        assert second.stderr.strip().startswith(f"error: --data {data} is in use by another run")
        first = _upload(port, files["photo"])
        assert _wait(port, first)["state"] == "done"
        job = _upload(port, long_video, frames="120")
        _wait(port, job, states=("running",))
        pid = _get(port, "/api/health")
        from webapp.store import JobStore
        worker = JobStore(str(data)).get(job)["worker"]
        os.kill(worker, signal.SIGKILL)  # our worker, by its id
        failed = _wait(port, job)
        assert failed["state"] == "failed"
        assert failed["error"].startswith("the worker process stopped (killed by signal 9)")
        nxt = _upload(port, files["photo"])
        assert _wait(port, nxt)["state"] == "done"  # a new worker took over
        assert pid["status"] == "ok"
        again = _upload(port, long_video, frames="120")
        _wait(port, again, states=("running",))
    finally:
        proc.kill()  # the server, killed mid-job
        out = proc.communicate(timeout=30)[0]
    assert f"serving http://127.0.0.1:{port}/" in out
    port = free_port()
    proc = start_server(files["ckpt"], data, port)
    try:
        jobs = {j["id"]: j for j in _get(port, "/api/jobs")["jobs"]}
        assert jobs[again]["state"] == "interrupted"
        assert jobs[first]["state"] == "done" and jobs[nxt]["state"] == "done"
        assert jobs[job]["state"] == "failed" and len(jobs) == 4
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "1 job(s) interrupted by the last stop" in out


@pytest.mark.slow
def test_the_verdict_is_published_before_its_evidence(server, files, monkeypatch):
    seen = []
    publish = server.store.publish

    def look(job_id, result, extra):
        publish(job_id, result, extra)
        seen.append(server.client.get(f"/api/jobs/{job_id}").json())
        seen[-1]["annotated"] = os.path.exists(os.path.join(server.store.folder(job_id), "out",
                                                            "video_annotated.mp4"))
    monkeypatch.setattr(server.store, "publish", look)
    job_id = server.post(files["video"], frames="4").json()["jobs"][0]["id"]
    server.run()
    done = server.wait(job_id)
    assert len(seen) == 1
    early = seen[0]
    assert early["state"] == "running" and early["links"] == {}
    assert early["result"] == done["result"]  # the same record, before the evidence
    assert early["persons"] == done["persons"]
    assert early["annotated"] is False  # the evidence comes after
    assert done["state"] == "done" and "video_annotated.mp4" in done["files"]
    assert done["seconds"]["verdict"] <= done["seconds"]["total"]


@pytest.mark.slow
def test_another_detector_serves(tmp_path, files, make_checkpoint):
    """Any detector the project loads: here the Xception baseline (no reconstruction: Grad-CAM
    only in its heat maps)."""
    import serve
    from webapp.worker import Predictors
    ckpt = make_checkpoint(tmp_path / "x.bin", "Xception", config={"model": {"name": "Xception"}},
                           spec=64)
    predictors = Predictors(str(ckpt))
    info = serve.model_info(predictors.get(None), str(ckpt))
    s = Server(tmp_path / "data", predictors, info).run()
    try:
        assert s.client.get("/api/model").json()["detector"] == "Xception"
        job = s.wait(s.post(files["photo"]).json()["jobs"][0]["id"])
        assert job["state"] == "done", job["error"]
        ref = predictors.get(None).predict_photo(files["photo"])
        assert job["result"]["fake_probability"] == pytest.approx(ref["fake_probability"], abs=1e-6)
        assert "face_0.png" in job["files"]
    finally:
        s.close()


def test_an_uploaded_name_is_text_everywhere(server, files):
    """A file name is shown, never run: escaped in the report, kept out of every path."""
    name = "<img src=x onerror=alert(1)>.jpg"
    with open(files["photo"], "rb") as fh:
        r = server.client.post("/api/jobs", files=[("files", ("../../" + name, fh, "image/jpeg"))])
    assert r.status_code == 201
    job = r.json()["jobs"][0]
    assert job["name"] == name  # the name without its folders
    server.run()
    job = server.wait(job["id"])
    assert sorted(os.listdir(server.store.folder(job["id"]))) == ["input.jpg", "out"]
    page = server.client.get(f"/api/jobs/{job['id']}/report.html").text
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in page and "<img src=x" not in page
    disposition = server.client.get(f"/api/jobs/{job['id']}/report.pdf").headers[
        "content-disposition"]
    assert "<" not in disposition and "/" not in disposition


@pytest.mark.slow
def test_a_calibrated_checkpoint_offers_its_operating_points(tmp_path, files):
    """The page passes an operating point's name through as the Predictor's threshold; the
    record says the threshold and where it came from, as the Python API's does."""
    calibration = pytest.importorskip("model.calibration")
    import serve
    from faces.api import Predictor
    from webapp.worker import Predictors
    state = torch.load(files["ckpt"], weights_only=False)
    metrics = {"ece": 0.1, "brier": 0.2, "nll": 0.6}
    state["calibration"] = calibration.Calibration(
        2.0, {"fpr@0.01": {"threshold": 0.7, "fpr": 0.01, "tpr": 0.5},
              "eer": {"threshold": 0.3, "fpr": 0.2, "tpr": 0.8}},
        {"dataset": "test"}, metrics, metrics).to_dict()
    ckpt = str(tmp_path / "calibrated.bin")
    torch.save(state, ckpt)
    predictors = Predictors(ckpt)
    info = serve.model_info(predictors.get(None), ckpt)
    s = Server(tmp_path / "data", predictors, info).run()
    try:
        model = s.client.get("/api/model").json()
        assert model["calibration"]["temperature"] == 2.0
        assert model["operating_points"] == ["fpr@0.01", "eer"]
        r = s.post(files["photo"], threshold="fpr@0.1")  # not one of this checkpoint's
        assert r.status_code == 422 and "form field threshold 'fpr@0.1'" in r.json()["detail"]
        job = s.wait(s.post(files["photo"], threshold="eer").json()["jobs"][0]["id"])
        assert job["state"] == "done", job["error"]
        ref = Predictor.from_checkpoint(ckpt, "cpu", threshold="eer").predict_photo(files["photo"])
        got = job["result"]
        assert got["threshold"] == ref["threshold"] == 0.3
        assert got["threshold_source"] == ref["threshold_source"]
        assert job["threshold"] == 0.3 and job["threshold_source"] == ref["threshold_source"]
        assert got["fake_probability"] == pytest.approx(ref["fake_probability"], abs=1e-6)
        assert got["raw_probability"] == pytest.approx(ref["raw_probability"], abs=1e-6)
        assert got["raw_probability"] != pytest.approx(got["fake_probability"], abs=1e-3)
        words = s.client.get(f"/api/jobs/{job['id']}/report.html").text
        assert "raw probability (before calibration)" in words and "0.3000 (" in words
    finally:
        s.close()


def test_the_form_fields_are_the_api_s_keywords_and_the_docs_list_them():
    """The page's form is the table ``webapp.app.FORM`` (frames, every, min_face_score: the
    API's own keywords; face_detector, threshold), described in the API's schema and listed in
    docs/serve.md's POST /api/jobs row."""
    import re

    from faces.arguments import KEYWORDS
    from helpers import ROOT
    from webapp.app import FORM
    names = [key.path for key in FORM]
    assert all(KEYWORDS[n] is key for n, key in zip(names, FORM) if n in KEYWORDS)
    row = next(line for line in open(os.path.join(ROOT, "docs", "serve.md"), encoding="utf-8")
               if line.startswith("| `POST /api/jobs` |"))
    listed = re.search(r"form fields: (.*?) \(", row).group(1)
    assert sorted(re.findall(r"`(\w+)`", listed)) == sorted(names), row


def test_one_handler_says_every_bad_setting_in_the_same_words(tmp_path):
    from fastapi.testclient import TestClient

    from webapp.app import create_app
    app = create_app(str(tmp_path / "data"), {})
    body = app.openapi()["components"]["schemas"]["Body_create_jobs_api_jobs_post"]
    assert body["properties"]["frames"]["description"] == "video: N evenly spaced frames"
    client = TestClient(app)
    png = ("x.png", b"\x89PNG not really", "image/png")
    for form, detail in (({"frames": "2.5"}, "form field frames: expected an integer, got 2.5"),
                         ({"threshold": "0.3:2"},
                          "form field threshold '0.3:2': expected a probability in [0, 1]"),
                         ({"threshold": "fpr@0.01"}, "form field threshold 'fpr@0.01': expected "
                          "a probability in [0, 1] or an operating point (none: the checkpoint "
                          "has no calibration), or two of them as a band a:b")):
        r = client.post("/api/jobs", files={"files": png}, data=form)
        assert (r.status_code, r.json()) == (422, {"detail": detail})
