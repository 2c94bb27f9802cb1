"""Results per eye, the clinician's grade and sign-off, the printable report and its PDF."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Optional

import cv2
import numpy as np
from flask import Blueprint, Response, abort, flash, g, redirect, render_template, request, url_for

from appliance.ui.app import audit, get_config, get_services, get_studies
from appliance.ui.pdf import PdfReport
from appliance.ui.timefmt import local_time

logger = logging.getLogger(__name__)

bp = Blueprint("results", __name__)

GRADES = {
    "0": "0 - No apparent retinopathy",
    "1": "1 - Mild non-proliferative DR",
    "2": "2 - Moderate non-proliferative DR",
    "3": "3 - Severe non-proliferative DR",
    "4": "4 - Proliferative DR",
}
REFERRALS = {"none": "No referral (routine rescreening)", "routine": "Routine referral", "urgent": "Urgent referral"}
STATEMENT = (
    "Decision support, not a diagnosis. The appliance marks candidate microaneurysms for a clinician "
    "to review; its findings can be incomplete or wrong. Microaneurysms alone correspond at most to mild "
    "non-proliferative diabetic retinopathy (grade 1 of the international scale). The software does not "
    "look for haemorrhages, exudates, venous beading, IRMA, new vessels or macular oedema, so it cannot "
    "rule out more severe disease or maculopathy. The grade and referral below are the clinician's own."
)
COLOURS_BGR = {"accepted": (60, 200, 60), "added": (0, 150, 255), "rejected": (160, 160, 160), None: (0, 230, 255)}


def grade_words(grade: str, maculopathy: str, ungradable: bool) -> str:
    """The clinician's grade as stored and sent (the store keeps the UI's wording)."""
    if ungradable:
        return "Ungradable"
    return f"{GRADES[grade]}; maculopathy: {maculopathy}"


@dataclass
class ImageSummary:
    """Counts and lesions of one photograph as the results page shows them."""

    image: Any
    lesions: list[dict[str, Any]] = field(default_factory=list)
    accepted: int = 0
    rejected: int = 0
    added: int = 0
    undecided: int = 0

    @property
    def ma_count(self) -> int:
        """int: microaneurysms confirmed by the clinician (accepted + added)."""
        return self.accepted + self.added


def summarise(studies: Any, image: Any, threshold: float) -> ImageSummary:
    """Count decisions; undecided lesions below the display threshold were never shown."""
    s = ImageSummary(image)
    for les in studies.lesions(image.id):
        d = les["decision"]
        if d is None and les["score"] < threshold:
            continue
        s.lesions.append(les)
        if d == "accepted":
            s.accepted += 1
        elif d == "rejected":
            s.rejected += 1
        elif d == "added":
            s.added += 1
        else:
            s.undecided += 1
    return s


def overlay_jpeg(image: Any, lesions: list[dict[str, Any]], max_side: int = 1600) -> tuple[bytes, int, int]:
    """The photograph with lesion circles coloured by decision, as a JPEG (at most max_side px)."""
    bgr = cv2.cvtColor(get_studies().load_rgb(image.id), cv2.COLOR_RGB2BGR)
    scale = min(1.0, max_side / max(bgr.shape[:2]))
    if scale < 1.0:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    thick = max(1, int(round(2 * max(bgr.shape[:2]) / 1600)))
    for les in lesions:
        r = max(4.0, np.sqrt(les["area_px"] / np.pi) + 4) * scale
        c = (int(round(les["x"] * scale)), int(round(les["y"] * scale)))
        cv2.circle(bgr, c, int(round(max(r, 3))), COLOURS_BGR.get(les["decision"], COLOURS_BGR[None]), thick, cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return buf.tobytes(), bgr.shape[1], bgr.shape[0]


def _study_or_404(study_id: int) -> Any:
    study = get_studies().study(study_id)
    if study is None:
        abort(404)
    return study


def implausible(grade: str, maculopathy: str, referral: str) -> Optional[str]:
    """A question for a sign-off that international practice would refer but the form does not.

    Why: a mis-tap on the touchscreen must not send "no referral" for sight-threatening disease
    to the PACS unnoticed; severe non-proliferative or proliferative DR is referred urgently, and
    maculopathy is referred. The clinician may confirm it (their decision stands).
    """
    if referral != "none":
        return None
    if grade in ("3", "4"):
        return f"Grade {grade} with no referral: is that right? Tick \u201cI confirm\u201d and sign off again to keep it."
    if maculopathy == "yes":
        return "Maculopathy with no referral: is that right? Tick \u201cI confirm\u201d and sign off again to keep it."
    return None


def result_model(studies: Any, study: Any) -> dict[str, str]:
    """The model that produced the study's automatic result, as the report must name it.

    The installed model may differ (an update installed since, or one the running engine has
    not loaded yet): its version is shown only when its manifest is the result's.
    """
    installed = get_services().model_info()
    result = studies.auto_result(study.result_id)
    if not result.model_sha256 or result.model_sha256 == installed.get("sha256"):
        return installed
    return {**installed, "name": result.model_name, "version": "(not the installed one)",
            "sha256": result.model_sha256}


def _context(study_id: int) -> dict[str, Any]:
    studies, config = get_studies(), get_config()
    study = _study_or_404(study_id)
    summaries = [summarise(studies, im, config.glance.display_threshold) for im in study.images]
    return {"study": study, "summaries": summaries, "model": result_model(studies, study), "statement": STATEMENT,
            "grades": GRADES, "referrals": REFERRALS, "signoff": studies.last_signoff(study_id)}


@bp.route("/study/<int:study_id>/results", methods=["GET", "POST"])
def results(study_id: int) -> Any:
    """Results of one eye and the sign-off form (clinicians)."""
    ctx = _context(study_id)
    if request.method == "POST":
        if g.user.role.value not in ("clinician", "admin"):
            abort(403)
        ungradable = request.form.get("ungradable") == "1"
        grade = request.form.get("grade", "")
        macul = request.form.get("maculopathy", "")
        referral = request.form.get("referral", "")
        error: Optional[str] = None
        if not ungradable and grade not in GRADES:
            error = "Choose a grade (0 to 4), or mark the eye ungradable."
        elif referral not in REFERRALS:
            error = "Choose a referral decision."
        elif not ungradable and macul not in ("yes", "no"):
            error = "Say whether there is maculopathy."
        if not error and request.form.get("confirm") != "1":
            error = implausible(grade if not ungradable else "", macul, referral)
            if error:
                flash(error, "error")
                return render_template("results.html", **ctx, confirm_needed=True), 400
        if error:
            flash(error, "error")
            return render_template("results.html", **ctx), 400
        signed = ctx["signoff"]
        shown_with = request.form.get("signed_id")  # the page's form always sends it; a script may not
        if shown_with is not None and shown_with != (str(signed["id"]) if signed else ""):
            # The page was shown before someone (or a double tap) signed this study off: a second
            # sign-off would silently replace that grade, or queue the same one to the PACS twice.
            flash(f"{signed['signed_by']} signed this study off meanwhile ({signed['grade']}). Check it; to change "
                  "it, sign again from this page.", "error")
            return render_template("results.html", **ctx), 409
        summary = {"ma_count": sum(s.ma_count for s in ctx["summaries"]),
                   "accepted": sum(s.accepted for s in ctx["summaries"]),
                   "rejected": sum(s.rejected for s in ctx["summaries"]),
                   "added": sum(s.added for s in ctx["summaries"])}
        get_studies().sign_off(study_id, g.user.name, grade_words(grade, macul, ungradable), REFERRALS[referral])
        audit("sign_off", f"study:{study_id}", {**summary, "grade": grade, "referral": referral})
        flash("Signed off. The reviewed result is queued for sync.", "ok")
        return redirect(url_for("results.results", study_id=study_id))
    return render_template("results.html", **ctx)


@bp.route("/image/<int:image_id>/overlay.jpg")
def overlay(image_id: int) -> Any:
    """The photograph with the lesion overlay."""
    studies = get_studies()
    image = studies.image(image_id)
    if image is None:
        abort(404)
    s = summarise(studies, image, get_config().glance.display_threshold)
    jpeg, _, _ = overlay_jpeg(image, s.lesions)
    return Response(jpeg, mimetype="image/jpeg")


@bp.route("/study/<int:study_id>/report")
def report(study_id: int) -> Any:
    """The printable report page."""
    ctx = _context(study_id)
    audit("report_view", f"study:{study_id}")
    return render_template("report.html", **ctx)


@bp.route("/study/<int:study_id>/pdf")
def report_pdf_view(study_id: int) -> Any:
    """The PDF inside a page of the appliance, with a way back.

    Why: the kiosk's Chromium has no back button; the PDF opened on its own filled the screen
    with the PDF viewer and nothing led back to the appliance.
    """
    return render_template("pdf_view.html", study=_study_or_404(study_id))


@bp.route("/study/<int:study_id>/report.pdf")
def report_pdf(study_id: int) -> Any:
    """The report as a PDF."""
    ctx = _context(study_id)
    study, model, signoff = ctx["study"], ctx["model"], ctx["signoff"]
    pdf = PdfReport()
    pdf.heading("Diabetic retinopathy screening - microaneurysm review")
    pdf.line(f"Patient (pseudonymous ID): {study.patient_id}    Eye: {'left' if study.eye == 'L' else 'right'}")
    pdf.line(f"Model: {model.get('name')} {model.get('version')}  sha256 {model.get('sha256', '')[:16]}...")
    pdf.gap()
    for s in ctx["summaries"]:
        pdf.line(f"Photograph {s.image.name}: microaneurysms confirmed {s.ma_count} "
                 f"(accepted {s.accepted}, added {s.added}; rejected {s.rejected}; not reviewed {s.undecided})"
                 + ("" if s.image.gradable else " - flagged ungradable"
                    + (": " + ", ".join(s.image.faults) if s.image.faults else "")), bold=True)
        jpeg, w, h = overlay_jpeg(s.image, s.lesions, max_side=1200)
        pdf.image(jpeg, w, h, max_height_pt=260)
        for les in s.lesions[:40]:
            pdf.line(f"  #{les['id']}  x {les['x']:.0f}  y {les['y']:.0f}  area {les['area_px']} px  "
                     f"score {les['score']:.2f}  {les['decision'] or 'not reviewed'}")
        pdf.gap()
    if signoff and signoff["changed"]:
        pdf.line("Draft: decisions changed after the last sign-off, not signed yet.", bold=True)
        pdf.line(f"Last sign-off: {signoff['grade']}, {signoff['signed_by']}, {local_time(signoff['signed_at'])}")
    elif signoff:
        pdf.line(f"Clinician's grade: {signoff['grade']}", bold=True)
        pdf.line(f"Referral: {signoff['referral']}")
        pdf.line(f"Signed off by {signoff['signed_by']} at {local_time(signoff['signed_at'])}")
    else:
        pdf.line("Not signed off yet: this is a draft.", bold=True)
    pdf.gap()
    pdf.line(STATEMENT)
    audit("export_pdf", f"study:{study_id}")
    # Framed by the appliance's own PDF page only (the app's default policy forbids any frame).
    return Response(pdf.build(), mimetype="application/pdf",
                    headers={"Content-Disposition": f"inline; filename=report-study-{study_id}.pdf",
                             "Content-Security-Policy": "default-src 'none'; frame-ancestors 'self'"})
