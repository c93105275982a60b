"""The page as a person uses it, in headless Chromium (Debian's ``chromium``, driven by
Playwright's Python API pointed at it; never a browser download): serve.py started for real, a
two-person video and a photo made here dropped on the page, their verdicts read off the page and
compared with the Python API's for the same files, the annotated video played (its length that of
the source), the PDF report downloaded and read, a file that is not media refused with its
reason, a long job cancelled, the keyboard opening the file picker. With ``SERVE_SCREENSHOTS=DIR``
the page is also saved as pictures at desktop and phone width."""
import os
import shutil

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("dlib")
playwright = pytest.importorskip("playwright.sync_api")
pypdf = pytest.importorskip("pypdf")

from helpers import people_video, portrait_photo

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not os.path.isfile(CHROMIUM),
                                 reason="needs Debian's chromium (apt-get install chromium)")]


def _value(page, selector):
    return page.locator(selector).inner_text().strip()


def test_the_page_in_a_browser(tmp_path, make_checkpoint, serve_process):
    from faces.api import Predictor
    ckpt = make_checkpoint(tmp_path / "best_model_1.bin", config={"model": {"name": "Recce"}},
                           spec=48)
    video = people_video(tmp_path / "two people.avi", frames=20, faces=2)  # 2.0 s at 10 fps
    pic = portrait_photo(tmp_path / "portrait.jpg")
    long_video = people_video(tmp_path / "long.avi", frames=200, faces=1)
    text = tmp_path / "notes.txt"
    text.write_text("minutes of the meeting, not a video")
    pred = Predictor.from_checkpoint(ckpt, "cpu", batch_size=8)
    expected = {"two people.avi": pred.predict_video(video, frames=4),
                "portrait.jpg": pred.predict_photo(pic)}
    shots = os.environ.get("SERVE_SCREENSHOTS")
    server, port = serve_process(ckpt, tmp_path / "data")
    url = f"http://127.0.0.1:{port}/"
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox",
                                              "--autoplay-policy=no-user-gesture-required"])
            page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
            page.goto(url)
            page.wait_for_function("document.getElementById('model').textContent.startsWith('Detector')")
            assert f"checkpoint {ckpt}, input" in _value(page, "#model")  # as given, whole
            # the keyboard reaches the file picker
            for attempt in (1, 2):  # on a busy machine a first key press can go unseen
                page.focus("#drop")
                try:
                    with page.expect_file_chooser(timeout=20_000) as chooser:
                        page.keyboard.press("Enter")
                    break
                except playwright.TimeoutError:
                    if attempt == 2:
                        raise
            assert chooser.value.is_multiple()
            page.click("#settings summary")
            page.fill("#frames", "4")
            page.set_input_files("#files", [video, pic])
            page.wait_for_function(
                "document.querySelectorAll('#jobs li[data-state=done]').length == 2",
                timeout=120_000)
            # a file that is not a photo or a video: one clear message, the rest goes on
            page.set_input_files("#files", [str(text)])
            alert = page.locator("#alerts .alert")
            alert.wait_for()
            assert "notes.txt: not a photo or a video" in alert.inner_text()
            for name, ref in expected.items():
                page.locator("#jobs li", has_text=name).get_by_role("button", name="Show").click()
                page.wait_for_function(
                    f"document.querySelector('#result-body .muted').textContent == {name!r}")
                assert _value(page, "#verdict") == ref["prediction"].upper()
                shown = float(_value(page, "#probability"))
                assert abs(shown - ref["fake_probability"]) <= 1e-4, (name, shown, ref)
                assert _value(page, "#judged-by").startswith("0.5000")
                rows = page.locator("#result-body table").first.locator("tbody tr")
                assert rows.count() == (2 if name.endswith(".avi") else 1)
                told = " ".join(_value(page, "#result-body dl.facts").split())
                if name.endswith(".avi"):
                    assert "face tracks / persons 2 / 2" in told, told
                else:  # one face, one person
                    assert "persons (one per face) 1" in told and "face tracks" not in told, told
                if name.endswith(".avi"):
                    assert "decides the verdict" in rows.first.inner_text()
                    page.wait_for_function("document.getElementById('annotated').readyState >= 1")
                    length = page.evaluate("document.getElementById('annotated').duration")
                    assert abs(length - 2.0) <= 0.1, length  # as long as the source
                    page.evaluate("(() => { const v = document.getElementById('annotated'); "
                                  "v.muted = true; return v.play(); })()")
                    page.wait_for_function("document.getElementById('annotated').currentTime > 0.2")
                    assert page.evaluate("document.getElementById('annotated').error") is None
                    heat = page.locator(".heat img")
                    assert heat.count() == 2
                    page.wait_for_function("Array.from(document.querySelectorAll('.heat img'))"
                                       ".every(i => i.complete && i.naturalWidth > 0)")
                    if shots:
                        os.makedirs(shots, exist_ok=True)
                        page.screenshot(path=os.path.join(shots, "desktop.png"), full_page=True)
                        page.set_viewport_size({"width": 390, "height": 844})
                        page.screenshot(path=os.path.join(shots, "phone.png"), full_page=True)
                        page.set_viewport_size({"width": 1280, "height": 900})
                    with page.expect_download() as dl:
                        page.get_by_role("link", name="Report (PDF)").click()
                    path = tmp_path / "report.pdf"
                    dl.value.save_as(path)
                    words = " ".join(pg.extract_text() for pg in pypdf.PdfReader(str(path)).pages)
                    assert "Report: two people.avi" in words
                    assert f"Verdict: {ref['prediction'].upper()}" in words
                    assert f"fake probability: {ref['fake_probability']:.4f}" in words
                    assert "track #1" in words and "(decides)" in words
            # a long job cancelled from its row
            page.fill("#frames", "200")
            page.set_input_files("#files", [long_video])
            row = page.locator("#jobs li[data-state=running]", has_text="long.avi")
            row.wait_for(timeout=60_000)
            row.get_by_role("button", name="Cancel").click()
            cancelled = page.locator("#jobs li[data-state=cancelled]", has_text="long.avi")
            cancelled.wait_for(timeout=60_000)
            assert page.locator("#jobs li[data-state=done]").count() == 2
            if shots:
                page.set_viewport_size({"width": 390, "height": 844})
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=os.path.join(shots, "phone_jobs.png"))
            # the API's documentation renders from this server alone (no CDN)
            asked = []
            docs = browser.new_page()
            docs.on("request", lambda r: asked.append(r.url))
            docs.goto(url + "docs")
            docs.locator(".swagger-ui .info .title").wait_for(timeout=30_000)
            assert "RECCE" in docs.locator(".swagger-ui .info .title").inner_text()
            assert docs.locator(".swagger-ui .opblock").count() >= 7  # the routes, rendered
            assert asked and all(u.startswith(url) for u in asked), asked
            browser.close()
    finally:
        server.terminate()
        server.communicate(timeout=30)
