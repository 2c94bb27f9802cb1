"""The reader: the photograph, live lesions (server-sent events), decisions, prompts, gaze in."""

from __future__ import annotations

import json
import logging
import math
import queue
from pathlib import Path
from typing import Any, Iterator

from flask import Blueprint, Response, abort, g, jsonify, render_template, request, stream_with_context

from appliance.errors import ApplianceError
from appliance.gaze.base import GazeSample
from appliance.ui.app import audit, get_config, get_hub, get_services, get_studies
from appliance.ui.live import LiveSession
from appliance.ui.security import roles_required
from appliance.ui.services import display_px_per_deg

logger = logging.getLogger(__name__)

bp = Blueprint("reader", __name__)

KEEPALIVE_S = 5.0
MAX_GAZE_BATCH = 400
DECISIONS = {"accepted", "rejected", "added", "withdrawn", None}


def _session(image_id: int) -> LiveSession:
    config, services = get_config(), get_services()
    image = get_studies().image(image_id)
    if image is None:
        abort(404)
    return get_hub().get(image_id, lambda: services.load_photograph(Path(image.path), config.imaging, name=image.name).rgb)


@bp.route("/reader/<int:image_id>")
@roles_required("clinician")
def view(image_id: int) -> Any:
    """The reading screen."""
    studies, services, config = get_studies(), get_services(), get_config()
    image = studies.image(image_id)
    if image is None:
        abort(404)
    study = studies.study(image.study_id)
    studies.mark_read(image.study_id)
    audit("view", f"study:{image.study_id}", {"image": image_id})
    status = services.tracker_status()
    session = _session(image_id)
    return render_template(
        "reader.html", image=image, study=study, lesions=studies.lesions(image_id),
        tracker=status, show_markers=status.kind not in ("pointer", "replay") and status.connected,
        gaze_source=session.source if session.source == "replay" else status.kind,
        screen_px_per_deg=display_px_per_deg(config), threshold=config.glance.display_threshold,
    )


@bp.route("/reader/marker/<int:marker_id>.png")
def marker(marker_id: int) -> Any:
    """AprilTag marker image for a screen corner (ids 0-3)."""
    if not 0 <= marker_id <= 3:
        abort(404)
    return Response(get_services().marker_png(marker_id), mimetype="image/png")


@bp.route("/reader/<int:image_id>/events")
@roles_required("clinician")
def events(image_id: int) -> Any:
    """Server-sent events: lesions as the pipeline emits them, gaze points, replay state."""
    session = _session(image_id)
    q = session.subscribe()

    def stream() -> Iterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    event = q.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
        finally:
            session.unsubscribe(q)

    return Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@bp.route("/api/reader/<int:image_id>/gaze", methods=["POST"])
@roles_required("clinician")
def gaze(image_id: int) -> Any:
    """Pointer / finger positions as gaze: ``{"samples": [{x, y, xs, ys, t_ms, ppd}]}``.

    ``x, y`` are image px (the page inverts its zoom and pan), ``xs, ys`` screen px for the
    pointer gaze source, ``t_ms`` the browser's epoch milliseconds, ``ppd`` image px per degree.
    """
    body = request.get_json(silent=True) or {}
    samples = body.get("samples", [])
    if not isinstance(samples, list) or len(samples) > MAX_GAZE_BATCH:
        abort(400, description="Malformed gaze batch.")
    session = _session(image_id)
    session.source = "pointer"
    push = get_services().pointer_push
    found = 0
    for s in samples:
        try:
            t_ns = int(float(s["t_ms"]) * 1e6)
            x, y = float(s["x"]), float(s["y"])
            ppd = float(s.get("ppd", math.nan))
        except (KeyError, TypeError, ValueError):
            abort(400, description="Malformed gaze sample.")
        if push is not None and "xs" in s:
            push(float(s["xs"]), float(s["ys"]), t_ns)
        found += session.push(GazeSample(t_ns, x, y, True, ppd))
    return jsonify({"ok": True, "events": found})


@bp.route("/api/reader/<int:image_id>/replay", methods=["POST"])
@roles_required("clinician")
def replay(image_id: int) -> Any:
    """Replay a gaze recording (CSV in image px) in its own timing."""
    upload = request.files.get("gaze")
    if upload is None:
        abort(400, description="Choose a gaze recording (CSV) to replay.")
    try:
        samples = get_services().read_gaze_csv(upload.read())
    except (ValueError, UnicodeDecodeError, ApplianceError) as exc:
        abort(400, description=f"The gaze recording cannot be read: {exc}")
    if not samples:
        abort(400, description="The gaze recording is empty.")
    speed = min(max(float(request.form.get("speed", 1.0) or 1.0), 0.1), 10.0)
    _session(image_id).start_replay(samples, speed)
    audit("gaze_replay", f"image:{image_id}", {"samples": len(samples)})
    return jsonify({"ok": True, "samples": len(samples)})


@bp.route("/api/reader/<int:image_id>/decision", methods=["POST"])
@roles_required("clinician")
def decision(image_id: int) -> Any:
    """Accept, reject, or undo (``decision: null``) a lesion."""
    body = request.get_json(silent=True) or {}
    value = body.get("decision")
    if value not in DECISIONS or not isinstance(body.get("lesion_id"), int):
        abort(400, description="Unknown decision.")
    get_studies().decide(image_id, body["lesion_id"], value, g.user.name)
    audit({"accepted": "accept", "rejected": "reject", "withdrawn": "undo_add", None: "undo"}[value],
          f"image:{image_id}", {"lesion": body["lesion_id"]})
    return jsonify({"ok": True})


@bp.route("/api/reader/<int:image_id>/prompt", methods=["POST"])
@roles_required("clinician")
def prompt(image_id: int) -> Any:
    """Prompt the model at a tapped image point; the result is an added lesion."""
    body = request.get_json(silent=True) or {}
    try:
        x, y = float(body["x"]), float(body["y"])
    except (KeyError, TypeError, ValueError):
        abort(400, description="Tap position missing.")
    image = get_studies().image(image_id)
    if image is None or not (0 <= x < image.width and 0 <= y < image.height):
        abort(400, description="The tap is outside the photograph.")
    lesion = _session(image_id).prompt(x, y)
    if lesion is None:
        return jsonify({"ok": False, "error": "Nothing found there."}), 200
    get_studies().decide(image_id, lesion["id"], "added", g.user.name)
    audit("add", f"image:{image_id}", {"lesion": lesion["id"]})
    return jsonify({"ok": True, "lesion": lesion})
