"""A job's report: one self-contained HTML file (pictures inlined) and a PDF (fpdf2), both from
the job's record and evidence; and the record as JSON."""
import base64
import datetime
import html
import json
import math
import os

from fileio import atomic_write, atomic_write_text


def to_json(value):
    return json.dumps(value, indent=2, allow_nan=False, default=str)


def _num(value, digits=4):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def verdict_text(job):
    r = job.get("result") or {}
    if r.get("fake_probability") is None:
        return (r.get("error") or "no verdict").upper() if r else "no verdict"
    return r.get("prediction", "").upper()


def summary(job):
    """(label, value) lines: the verdict and what it was judged by."""
    r, x = job.get("result") or {}, job.get("extra") or {}
    model = x.get("model") or {}
    s = job.get("settings") or {}
    threshold = _num(x.get("threshold"))
    lower = r.get("threshold_lower")
    if lower is not None and x.get("threshold") is not None and lower < x["threshold"]:
        threshold = f"uncertain from {_num(lower)}, fake from {threshold}"
    said = [x["threshold_source"]] if x.get("threshold_source") else []
    if r.get("threshold_level"):
        said.append(f"{r['threshold_level']} level")
    if r.get("threshold_fpr_upper") is not None:
        said.append(f"validation FPR at most {_num(r['threshold_fpr_upper'])} (95 %)")
    if said:
        threshold += f" ({', '.join(said)})"
    if r.get("threshold_supported") is False:
        threshold += "; not supported by the validation data"
    rows = [("file", job.get("name")), ("kind", r.get("kind")), ("verdict", verdict_text(job)),
            ("fake probability", _num(r.get("fake_probability")))]
    if "raw_probability" in r and model.get("calibration"):
        rows.append(("raw probability (before calibration)", _num(r.get("raw_probability"))))
    rows.append(("threshold", threshold))
    if r.get("kind") == "photo":  # one face, one person
        rows.append(("persons (one per face)", r.get("frames_or_faces")))
    else:  # tracks, of which those seen long enough are persons
        rows += [("frames of the deciding track", r.get("frames_or_faces")),
                 ("face tracks / persons", f"{r.get('tracks')} / {r.get('persons')}")]
    rows += [("detector", model.get("detector")), ("checkpoint", model.get("checkpoint")),
             ("settings", ", ".join(f"{k} {v}" for k, v in s.items() if v not in (None, ""))
              or "the defaults"),
             ("scored", datetime.datetime.fromtimestamp(job.get("started") or 0,
                                                        datetime.timezone.utc)
              .strftime("%Y-%m-%d %H:%M:%S UTC") if job.get("started") else "-")]
    if r.get("error"):
        rows.append(("note", r["error"]))
    return rows


def _data_uri(path):
    with open(path, "rb") as fh:
        return "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")


def pictures(job, out):
    """(caption, path) of the pictures of a job's evidence that exist."""
    x = job.get("extra") or {}
    found = []
    for name, caption in (("video_timeline.png", "fake probability over time, per face track"),
                          ("photo_annotated.png", "the photo, each face boxed and scored")):
        if os.path.isfile(os.path.join(out, name)):
            found.append((caption, os.path.join(out, name)))
    for track, h in sorted((x.get("heat_maps") or {}).items(), key=lambda kv: int(kv[0])):
        p = os.path.join(out, h["file"])
        if os.path.isfile(p):
            found.append((f"track #{track}, frame {h['frame']} ({h['time']:.2f} s): the face, "
                          "its reconstruction and the evidence maps", p))
    return found


def report_html(job, out):
    """The report as one HTML file: everything inlined, nothing fetched."""
    e = html.escape
    r, x = job.get("result") or {}, job.get("extra") or {}
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<meta name='viewport' content='width=device-width, initial-scale=1'>",
             f"<title>Report: {e(str(job.get('name')))}</title><style>",
             "body{font-family:system-ui,sans-serif;max-width:60rem;margin:1rem auto;"
             "padding:0 1rem;color:#111}table{border-collapse:collapse;margin:.5rem 0}"
             "td,th{border:1px solid #bbb;padding:.2rem .5rem;text-align:left}"
             "img{max-width:100%}.fake{color:#b00020}"
             ".real{color:#1b5e20}</style></head><body>",
             f"<h1>Report: {e(str(job.get('name')))}</h1>",
             f"<p class='{e(r.get('prediction') or '')}'><strong>Verdict: {e(verdict_text(job))}"
             "</strong></p><table>"]
    for k, v in summary(job):
        parts.append(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>")
    parts.append("</table><h2>Persons</h2><table><tr><th>track</th><th>frames</th>"
                 "<th>mean fake probability</th><th>highest</th><th>decides</th></tr>")
    for p in x.get("persons") or []:
        decides = "yes" if p["decides"] else ("" if p["person"] else "not a person")
        parts.append(f"<tr><td>#{p['track']}</td><td>{p['frames']}</td>"
                     f"<td>{_num(p['fake_probability'])}</td><td>{_num(p['max_probability'])}"
                     f"</td><td>{decides}"
                     "</td></tr>")
    parts.append("</table>")
    for caption, path in pictures(job, out):
        parts.append(f"<figure><img src='{_data_uri(path)}' alt='{e(caption)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Faces, frame by frame</h2><table><tr><th>frame</th><th>time (s)</th>"
                 "<th>track</th><th>box</th><th>detector score</th><th>fake probability</th></tr>")
    for f in r.get("faces") or []:
        parts.append(f"<tr><td>{f['frame']}</td><td>{f['time']:.3f}</td><td>#{f['track']}</td>"
                     f"<td>{f['x1']:.0f},{f['y1']:.0f} - {f['x2']:.0f},{f['y2']:.0f}</td>"
                     f"<td>{_num(f['detector_score'])}</td><td>{_num(f['fake_probability'])}</td>"
                     "</tr>")
    parts.append("</table><h2>The record</h2><pre>"
                 + e(to_json({k: v for k, v in r.items() if k != "faces"})) + "</pre>")
    parts.append("<p><small>RECCE face-forgery detector; a probability from a model, not a proof."
                 "</small></p></body></html>")
    return "".join(parts)


def _latin(text):
    """fpdf2's core fonts speak Latin-1: anything else becomes '?'."""
    return str(text).encode("latin-1", "replace").decode("latin-1")


def report_pdf(job, out):
    """The report as PDF bytes (fpdf2, its core font)."""
    from fpdf import FPDF
    r, x = job.get("result") or {}, job.get("extra") or {}
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.add_page()
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("Helvetica", "B", 16)
    pdf.multi_cell(width, 9, _latin(f"Report: {job.get('name')}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 13)
    pdf.multi_cell(width, 8, _latin(f"Verdict: {verdict_text(job)}"), new_x="LMARGIN",
                   new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for k, v in summary(job):
        pdf.multi_cell(width, 5.5, _latin(f"{k}: {v}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 12)
    pdf.cell(width, 7, "Persons", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 10)
    for p in x.get("persons") or []:
        mark = " (decides)" if p["decides"] else ("" if p["person"] else " (not a person)")
        pdf.cell(width, 5.5, _latin(f"track #{p['track']}: {p['frames']} frames, mean fake "
                                    f"probability {_num(p['fake_probability'])}, highest "
                                    f"{_num(p['max_probability'])}{mark}"),
                 new_x="LMARGIN", new_y="NEXT")
    for caption, path in pictures(job, out):
        pdf.ln(2)
        pdf.image(path, w=min(width, 170))
        pdf.set_font("Helvetica", "I", 9)
        pdf.multi_cell(width, 5, _latin(caption), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "B", 12)
    pdf.ln(2)
    pdf.cell(width, 7, "Faces, frame by frame", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Courier", "", 8.5)
    pdf.cell(width, 4.5, "frame    time  track  detector  p(fake)", new_x="LMARGIN", new_y="NEXT")
    for f in r.get("faces") or []:
        pdf.cell(width, 4.5, f"{f['frame']:>5} {f['time']:>7.3f}  #{f['track']:<4} "
                             f"{f['detector_score']:>8.4f}  {f['fake_probability']:.4f}",
                 new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def write_reports(job, out):
    """``report.html`` and ``report.pdf`` into the job's ``out`` folder."""
    atomic_write_text(os.path.join(out, "report.html"), report_html(job, out))
    data = report_pdf(job, out)
    atomic_write(os.path.join(out, "report.pdf"), lambda fh: fh.write(data), mode="wb")
