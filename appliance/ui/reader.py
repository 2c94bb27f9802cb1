"""The reader: the photograph, live lesions (server-sent events), decisions, prompts, gaze in."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import queue
import secrets
from typing import Any, Iterator, Optional

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request, stream_with_context

from appliance.errors import ApplianceError, StoreError
from appliance.glance.lesions import Lesion
from appliance.ui.app import audit, get_config, get_hub, get_services, get_studies, stored_photograph
from appliance.ui.gaze_link import ReaderGaze, view_from_page
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


def _gaze_link(image_id: int, page: Optional[str] = None) -> ReaderGaze:
    """The photograph's gaze sources (pointer, and the Neon when configured), opened on first use;
    ``page`` is the token of a reader page that reads it from now on."""
    image = _image_or_404(image_id)
    session = _session(image_id)
    link = get_hub().gaze.open(image_id, image.width, image.height, session.push, page)
    # A replayed recording owns the pipeline while it runs: live gaze would interleave.
    link.replaying = lambda: session.replay_thread is not None and session.replay_thread.is_alive()
    return link


def tracker_status() -> Any:
    """The gaze source the station uses: the open Neon's own status, else the services' view."""
    gaze = get_hub().gaze
    neon = gaze.neon_status() if gaze is not None else None
    return neon if neon is not None else get_services().tracker_status()


def _lesion_state(image_id: int, lesion_id: int) -> Optional[dict[str, Any]]:
    return next((l for l in get_studies().lesions(image_id) if l["id"] == lesion_id), None)


@bp.route("/reader/<int:image_id>")
@roles_required("clinician")
def view(image_id: int) -> Any:
    """The reading screen: lesions decided before and those the live pipeline showed so far."""
    studies, config = get_studies(), get_config()
    image = _image_or_404(image_id)
    if studies.store.get_image(image_id).deleted_at:
        # Retention removed it: say so, instead of a black reader around a broken image (a live
        # session opened before the removal still held its pixels, so nothing else failed).
        from appliance.ui.worklist import RETAINED_AWAY

        abort(410, description=RETAINED_AWAY)
    study = studies.study(image.study_id)
    audit("view", f"study:{image.study_id}", {"image": image_id})
    session = _session(image_id)
    page = secrets.token_urlsafe(12)  # this copy of the page: its close ends only its own reading
    link = _gaze_link(image_id, page)
    status = tracker_status()
    stored = {l["id"]: l for l in studies.lesions(image_id)}
    lesions = {i: l for i, l in stored.items() if l["decision"]}
    for lid, payload in list(session.shown.items()):
        lesions[lid] = {**payload, "decision": stored.get(lid, {}).get("decision")}
    d, t = config.display, config.tracker
    markers = []
    # The Neon needs the markers to connect its screen mapping, so they show before it is up.
    if status.kind not in ("pointer", "replay") and (status.connected or link.neon is not None):
        from appliance.gaze.screen_mapping import screen_markers

        markers = [{"id": m.marker_id, "x": m.x_px, "y": m.y_px, "size": t.marker_size_px}
                   for m in screen_markers(d.width_px, d.height_px, t.marker_size_px, t.marker_margin_px)]
    return render_template(
        "reader.html", image=image, study=study, lesions=list(lesions.values()),
        tracker=status, show_markers=bool(markers), markers=markers, page=page,
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
    slots, user = current_app.extensions["glanceseg_streams"], g.user.id
    q = session.subscribe()

    def stop() -> None:  # ends this stream to make room for the same user's newer page
        session.unsubscribe(q)  # nothing is added from now on, so one free place is enough
        with contextlib.suppress(queue.Empty):
            q.get_nowait()
        q.put_nowait(None)

    if not slots.acquire(user, stop):
        session.unsubscribe(q)
        abort(429, description="Too many reader pages are open; close one and reload this page.")

    def stream() -> Iterator[str]:
        yield "retry: 2000\n\n"
        while True:
            try:
                event = q.get(timeout=KEEPALIVE_S)
            except queue.Empty:
                yield ": keepalive\n\n"
                continue
            if event is None:
                return
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"

    def closed() -> None:  # runs when the server closes the response, started or not
        session.unsubscribe(q)
        slots.release(user, stop)

    resp = Response(stream_with_context(stream()), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
    resp.call_on_close(closed)
    return resp


@bp.route("/api/reader/<int:image_id>/view", methods=["POST"])
@roles_required("clinician")
def view_change(image_id: int) -> Any:
    """The page zoomed, panned or resized: ``{scale, tx, ty, width, height, left, top}``.

    ``scale`` is screen px per image px, ``tx, ty`` where the image's top-left corner sits in
    the viewport, ``width, height`` the viewport's size and ``left, top`` its offset on the
    screen (all screen px). Every gaze source of the photograph maps through it from now on.
    """
    image = _image_or_404(image_id)
    try:
        new = view_from_page(image.width, image.height, request.get_json(silent=True) or {})
    except ValueError as exc:
        abort(400, description=str(exc))
    _gaze_link(image_id).set_view(new)
    return jsonify({"ok": True, "zoom": new.zoom})


@bp.route("/api/reader/<int:image_id>/gaze", methods=["POST"])
@roles_required("clinician")
def gaze(image_id: int) -> Any:
    """Pointer / finger positions as gaze: ``{"samples": [{xs, ys, t_ms} | {gone, t_ms}]}``.

    ``xs, ys`` are screen px (the page's own coordinates; the kiosk page fills the screen),
    ``t_ms`` the browser's epoch milliseconds. They go into the photograph's pointer gaze
    source, which maps them through the view last posted (``/view``); its feeder thread runs
    the pipeline, so lesions arrive over the event stream, not in this reply.
    """
    body = request.get_json(silent=True) or {}
    samples = body.get("samples", [])
    if not isinstance(samples, list) or len(samples) > MAX_GAZE_BATCH:
        abort(400, description="Malformed gaze batch.")
    parsed: list[tuple[int, Optional[tuple[float, float]]]] = []
    for s in samples:
        try:
            t_ns = int(float(s["t_ms"]) * 1e6)
            point = None if s.get("gone") else (float(s["xs"]), float(s["ys"]))
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            abort(400, description="Malformed gaze sample.")
        parsed.append((t_ns, point))
    link = _gaze_link(image_id)
    _session(image_id).source = "pointer"
    push = get_services().pointer_push
    for t_ns, point in parsed:
        if point is None:  # the pointer left the photograph: no gaze
            link.pointer_gone(t_ns)
            continue
        if push is not None:
            push(point[0], point[1], t_ns)
        link.pointer_at(point[0], point[1], t_ns)
    return jsonify({"ok": True, "queued": len(parsed)})


@bp.route("/api/reader/<int:image_id>/tracker")
@roles_required("clinician")
def tracker(image_id: int) -> Any:
    """The gaze source's state for the reader's badge: kind, connected, battery (percent or null),
    whether the tracker's scene camera finds the screen's corner markers and whether the glasses
    are worn (null: unknown)."""
    _image_or_404(image_id)
    status = tracker_status()
    battery = status.detail.get("battery_percent")
    screen, worn = status.detail.get("screen_found"), status.detail.get("worn")
    return jsonify({"kind": status.kind, "connected": bool(status.connected),
                    "battery_percent": battery if isinstance(battery, (int, float)) else None,
                    "screen_found": screen if isinstance(screen, bool) else None,
                    "worn": worn if isinstance(worn, bool) else None})


@bp.route("/api/reader/<int:image_id>/gaze-check", methods=["POST"])
@roles_required("clinician")
def gaze_check_start(image_id: int) -> Any:
    """Start the eye tracker's accuracy check: the page shows ``targets`` (screen px) one after
    another, ``target_ms`` each, from now, then posts ``gaze-check/done``."""
    try:
        check = _gaze_link(image_id).start_check()
    except ValueError as exc:
        abort(400, description=str(exc))
    from appliance.ui.gaze_check import TARGET_MS

    return jsonify({"ok": True, "targets": [[round(x, 1), round(y, 1)] for x, y in check.targets()],
                    "target_ms": TARGET_MS})


@bp.route("/api/reader/<int:image_id>/gaze-check/done", methods=["POST"])
@roles_required("clinician")
def gaze_check_done(image_id: int) -> Any:
    """Measure the check: its correction applies from now on when the error left is small."""
    try:
        result = _gaze_link(image_id).finish_check()
    except ValueError as exc:
        abort(400, description=str(exc))
    residual = round(result.residual_deg, 2) if math.isfinite(result.residual_deg) else None
    audit("gaze_check", f"image:{image_id}", {"ok": result.ok, "residual_deg": residual})
    return jsonify({"ok": result.ok, "message": result.message, "residual_deg": residual})


@bp.route("/api/reader/<int:image_id>/close", methods=["POST"])
@roles_required("clinician")
def close(image_id: int) -> Any:
    """A reader page closed (``?page=`` its token): stop the photograph's gaze sources, the Neon
    connection included, and its live pipeline, unless another page still reads it."""
    _image_or_404(image_id)
    hub = get_hub()
    page = request.args.get("page") or None
    closed = bool(hub.gaze is not None and hub.gaze.close_one(image_id, page))
    if hub.gaze is None or hub.gaze.get(image_id) is None:
        # No page reads it any more (the Neon may have moved to the next photograph already):
        # its pipeline and pre-encoding stop too.
        hub.close_session(image_id)
    return jsonify({"ok": True, "closed": closed})


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
    try:
        speed = float(request.form.get("speed", 1.0) or 1.0)
    except ValueError:
        speed = math.nan
    if not math.isfinite(speed):
        abort(400, description="The replay speed must be a number.")
    speed = min(max(speed, 0.1), 10.0)
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
    get_hub().gaze.record_event(image_id, f"lesion_{value}", str(body["lesion_id"]))
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
    get_hub().gaze.record_event(image_id, "lesion_added", str(payload["id"]))
    return jsonify({"ok": True, "lesion": payload})
