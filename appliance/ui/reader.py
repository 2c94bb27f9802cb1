"""The reader: the photograph, live lesions (server-sent events), decisions, prompts, gaze in."""

from __future__ import annotations

import json
import logging
import math
import queue
from typing import Any, Iterator, Optional

from flask import Blueprint, Response, abort, g, jsonify, render_template, request, stream_with_context

from appliance.errors import ApplianceError, StoreError
from appliance.gaze.base import GazeSample
from appliance.glance.lesions import Lesion
from appliance.ui.app import audit, get_config, get_hub, get_services, get_studies, stored_photograph
from appliance.ui.live import LiveSession
from appliance.ui.security import roles_required
from appliance.ui.services import display_px_per_deg

logger = logging.getLogger(__name__)

bp = Blueprint("reader", __name__)

KEEPALIVE_S = 5.0
MAX_GAZE_BATCH = 400
DECISIONS = {"accepted": "accept", "rejected": "reject"}


def _image_or_404(image_id: int) -> Any:
    image = get_studies().image(image_id)
    if image is None:
        abort(404)
    return image


def _session(image_id: int) -> LiveSession:
    _image_or_404(image_id)
    return get_hub().get(image_id, lambda: stored_photograph(image_id))


def _lesion_state(image_id: int, lesion_id: int) -> Optional[dict[str, Any]]:
    return next((l for l in get_studies().lesions(image_id) if l["id"] == lesion_id), None)


@bp.route("/reader/<int:image_id>")
@roles_required("clinician")
def view(image_id: int) -> Any:
    """The reading screen: lesions decided before and those the live pipeline showed so far."""
    studies, services, config = get_studies(), get_services(), get_config()
    image = _image_or_404(image_id)
    study = studies.study(image.study_id)
    audit("view", f"study:{image.study_id}", {"image": image_id})
    status = services.tracker_status()
    session = _session(image_id)
    stored = {l["id"]: l for l in studies.lesions(image_id)}
    lesions = {i: l for i, l in stored.items() if l["decision"]}
    for lid, payload in list(session.shown.items()):
        lesions[lid] = {**payload, "decision": stored.get(lid, {}).get("decision")}
    d, t = config.display, config.tracker
    markers = []
    if status.kind not in ("pointer", "replay") and status.connected:
        from appliance.gaze.screen_mapping import screen_markers

        markers = [{"id": m.marker_id, "x": m.x_px, "y": m.y_px, "size": t.marker_size_px}
                   for m in screen_markers(d.width_px, d.height_px, t.marker_size_px, t.marker_margin_px)]
    return render_template(
        "reader.html", image=image, study=study, lesions=list(lesions.values()),
        tracker=status, show_markers=bool(markers), markers=markers,
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
    """Pointer / finger positions as gaze: ``{"samples": [{x, y, xs, ys, t_ms, ppd} | {gone, t_ms}]}``.

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
            if s.get("gone"):  # the pointer left the photograph: no gaze
                found += session.push(GazeSample(t_ns, math.nan, math.nan, True, math.nan))
                continue
            x, y = float(s["x"]), float(s["y"])
            ppd = float(s.get("ppd", math.nan))
        except (KeyError, TypeError, ValueError, AttributeError):
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
    """Accept or reject a lesion (a rejected added lesion is withdrawn)."""
    body = request.get_json(silent=True) or {}
    value = body.get("decision")
    if value not in DECISIONS or not isinstance(body.get("lesion_id"), int):
        abort(400, description="Unknown decision.")
    image = _image_or_404(image_id)
    try:
        get_studies().decide(image.result_id, body["lesion_id"], DECISIONS[value], g.user.name)
    except StoreError as exc:
        abort(400, description=str(exc))
    audit(DECISIONS[value], f"image:{image_id}", {"lesion": body["lesion_id"]})
    return jsonify({"ok": True})


@bp.route("/api/reader/<int:image_id>/undo", methods=["POST"])
@roles_required("clinician")
def undo(image_id: int) -> Any:
    """Undo the latest decision on this photograph; answer the lesion's state after it."""
    image = _image_or_404(image_id)
    lesion_id = get_studies().undo(image.result_id, g.user.name)
    if lesion_id is None:
        return jsonify({"ok": True, "lesion_id": None})
    audit("undo", f"image:{image_id}", {"lesion": lesion_id})
    state = _lesion_state(image_id, lesion_id)
    return jsonify({"ok": True, "lesion_id": lesion_id, "present": state is not None,
                    "decision": state["decision"] if state else None})


@bp.route("/api/reader/<int:image_id>/prompt", methods=["POST"])
@roles_required("clinician")
def prompt(image_id: int) -> Any:
    """Prompt the model at a tapped image point; the result is an added lesion.

    Without a model (saliency-only engine) the clinician's own mark stands, as a small disc.
    """
    body = request.get_json(silent=True) or {}
    try:
        x, y = float(body["x"]), float(body["y"])
    except (KeyError, TypeError, ValueError):
        abort(400, description="Tap position missing.")
    image = _image_or_404(image_id)
    if not (0 <= x < image.width and 0 <= y < image.height):
        abort(400, description="The tap is outside the photograph.")
    lesion = _session(image_id).prompt(x, y)
    if lesion is None:
        lesion = Lesion(0, x, y, 0, (int(x), int(y), int(x) + 1, int(y) + 1), 1.0, "clinician", None)
    payload = get_studies().add(image.result_id, lesion, g.user.name)
    audit("add", f"image:{image_id}", {"lesion": payload["id"], "source": payload["source"]})
    return jsonify({"ok": True, "lesion": payload})
