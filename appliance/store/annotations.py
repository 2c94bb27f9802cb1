"""Clinicians' decisions as training examples, and their export for fine-tuning.

Every accepted, rejected or added lesion becomes one example: the model tile it lies in
(the fixed grid of :mod:`appliance.imaging.tiling`), the prompt box, the mask, the decision,
who decided and when, and the model version that proposed it. The decision log (``decisions``,
migration 0001) stays the one source of truth: :func:`refresh` rebuilds the examples of every
result whose log grew, so an undo simply removes its example. Tile crops are saved as PNG files
when the example is made, because retention may delete the photograph long before the
examples are used.

Export layout (``glanceseg annotations export DIR``, documented in docs/annotations.md)::

    DIR/manifest.json       format, counts, dataset_sha256, tile size
    DIR/annotations.jsonl   one example per line (see EXAMPLE_KEYS)
    DIR/tiles/<tile>.png    RGB tile, tile_size x tile_size, zero-padded past the image edge
    DIR/masks/<id>.png      8-bit mask in tile coordinates, 255 on the lesion
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from appliance.errors import StoreError
from appliance.imaging.tiling import TileGrid
from appliance.store import db, files
from appliance.store.results import utc_now

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "glanceseg-annotations/1"
TILE_SIZE = 256
TILE_OVERLAP = 64
#: Name of the refresh cursor in ``annotation_cursor`` (highest decision or sign-off seq built).
CURSOR = "signed"
#: Margin in px added around a lesion's mask when no prompt box was recorded.
BOX_MARGIN_PX = 4
DECISION_NAMES = {"accept": "accepted", "reject": "rejected", "add": "added"}
EXAMPLE_KEYS = ("id", "tile", "mask", "label", "decision", "box_tile", "box_image", "center_tile",
                "center_image", "actor", "decided_at", "score", "source", "features", "model",
                "image_sha256", "tile_grid", "group")


@dataclass(frozen=True)
class Annotation:
    """One training example (see the 0003 migration for the meaning of each column)."""

    id: int
    result_id: int
    lesion_id: int
    decision: str
    actor: str
    decided_at: str
    x: float
    y: float
    box: tuple[int, int, int, int]
    mask_origin: tuple[int, int]
    mask: np.ndarray
    tile: tuple[int, int, int, int, int]  # row, col, x0, y0, size
    tile_path: Optional[str]
    image_sha256: str
    score: Optional[float]
    source: str
    features: dict[str, Any]
    model_name: str
    model_sha256: str
    model_version: str

    @property
    def label(self) -> int:
        """int: 1 for a real lesion (accepted or added), 0 for a rejected one."""
        return 0 if self.decision == "rejected" else 1


def model_versions(config: Any) -> dict[str, str]:
    """Map the sha256 of each known ``manifest.json`` to its model version.

    Installed versions live in ``<data_dir>/models/<version>/``; the shipped model reads as
    ``shipped-<version>``. Only files are read: the store never imports the update code.
    """
    out: dict[str, str] = {}
    shipped = Path(config.model.dir) / "manifest.json"
    with contextlib.suppress(OSError, ValueError):
        raw = shipped.read_bytes()
        out[hashlib.sha256(raw).hexdigest()] = f"shipped-{json.loads(raw).get('version', '0')}"
    root = config.data_dir / "models"
    for path in sorted(root.glob("*/manifest.json")) if root.is_dir() else []:
        if not path.parent.is_symlink():
            with contextlib.suppress(OSError):
                out[hashlib.sha256(path.read_bytes()).hexdigest()] = path.parent.name
    return out


def prompt_box(lesion: Any, width: int, height: int) -> tuple[int, int, int, int]:
    """Return the lesion's prompt box in image px (exclusive end).

    Uses ``features["box_x0" .. "box_y1"]`` when the pipeline recorded the box it prompted
    with; otherwise the mask's bbox grown by :data:`BOX_MARGIN_PX` (what the predictor would
    prompt for a lesion of that size).
    """
    f = getattr(lesion, "features", None) or {}
    if all(k in f for k in ("box_x0", "box_y0", "box_x1", "box_y1")):
        box = [int(round(f[k])) for k in ("box_x0", "box_y0", "box_x1", "box_y1")]
    else:
        x0, y0, x1, y1 = (int(v) for v in lesion.bbox)
        box = [x0 - BOX_MARGIN_PX, y0 - BOX_MARGIN_PX, x1 + BOX_MARGIN_PX, y1 + BOX_MARGIN_PX]
    return (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))


def _store_lock(store: Any) -> Any:
    return getattr(store, "_lock", contextlib.nullcontext())


def refresh(store: Any) -> int:
    """Rebuild the examples of every result whose decision log grew since the last call.

    Returns
    -------
    int
        Number of results rebuilt.

    A result whose files are corrupt is skipped with a warning (its earlier examples stay).
    """
    conn = store.connection
    with _store_lock(store), db.transaction(conn) as c:
        # Its own cursor: rows an earlier release built from unsigned decisions (under the
        # 'decisions' cursor) are rebuilt once under the sign-off rule, with no migration.
        c.execute("INSERT OR IGNORE INTO annotation_cursor (name, seq) VALUES (?, 0)", (CURSOR,))
    cursor = int(conn.execute("SELECT seq FROM annotation_cursor WHERE name = ?", (CURSOR,)).fetchone()[0])
    # A sign-off adds no decision but changes which decisions count, so it moves the cursor too.
    top = int(conn.execute(
        "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM decisions),"
        " (SELECT COALESCE(MAX(seq), 0) FROM results WHERE kind = 'reviewed'))").fetchone()[0])
    if top <= cursor:
        return 0
    result_ids = [int(r[0]) for r in conn.execute(
        "SELECT result_id FROM decisions WHERE seq > ? AND seq <= ?"
        " UNION SELECT based_on FROM results WHERE kind = 'reviewed' AND based_on IS NOT NULL AND seq > ? AND seq <= ?"
        " ORDER BY 1", (cursor, top, cursor, top))]
    versions = model_versions(store.config)
    rebuilt = 0
    for result_id in result_ids:
        try:
            rows = _examples_of(store, result_id, versions)
        except StoreError as exc:
            # One damaged study must not stop every other study's examples (and an export, or
            # retention's saving of tiles, with them): its earlier examples, if any, stay.
            logger.warning("annotations of result %d not rebuilt: %s", result_id, exc)
            continue
        rebuilt += 1
        with _store_lock(store), db.transaction(conn) as c:
            # An example whose decision still stands keeps its id (docs: "stable while the
            # decision stands"); a rebuild for another lesion's decision renumbered them all.
            kept = {(int(r[1]), int(r[2])): int(r[0]) for r in c.execute(
                "SELECT id, lesion_id, decision_seq FROM annotations WHERE result_id = ?", (result_id,))}
            c.execute("DELETE FROM annotations WHERE result_id = ?", (result_id,))
            numbered = [(kept.get((int(r[2]), int(r[4]))), *r) for r in rows]
            numbered.sort(key=lambda r: r[0] is None)  # kept ids first, so a new row cannot take one
            c.executemany(
                "INSERT INTO annotations (id, result_id, image_id, lesion_id, decision, decision_seq, actor, decided_at,"
                " x, y, box_x0, box_y0, box_x1, box_y1, mask_x0, mask_y0, mask_w, mask_h, mask, tile_row, tile_col,"
                " tile_x0, tile_y0, tile_size, tile_path, image_sha256, score, source, features_json, model_name,"
                " model_sha256, model_version, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", numbered)
    with _store_lock(store), db.transaction(conn) as c:
        c.execute("UPDATE annotation_cursor SET seq = ? WHERE name = ? AND seq < ?", (top, CURSOR, top))
    logger.info("annotations rebuilt for %d result(s)", rebuilt)
    return rebuilt


def _examples_of(store: Any, result_id: int, versions: dict[str, str]) -> list[tuple]:
    record = store.get_result(result_id)
    image = store.get_image(record.image_id)
    signed = store.connection.execute(
        "SELECT MAX(seq) FROM results WHERE kind = 'reviewed' AND based_on = ?", (result_id,)).fetchone()[0]
    if signed is None:
        return []  # never signed off: the decisions are a review in progress, not an annotation
    # Only what the latest sign-off (an amendment included) stated: decisions made after it
    # belong to an amendment nobody signed yet.
    log = [d for d in store.decisions(result_id) if d.seq < int(signed)]
    undone = {d.undoes for d in log if d.action == "undo"}
    decisive = {}
    for d in log:  # the latest effective decision per lesion wins
        if d.action != "undo" and d.id not in undone:
            decisive[d.lesion_id] = d
    states, added = store.lesion_states(result_id, before_seq=int(signed))
    lesions = {int(l.id): l for l in store.load_result(result_id).result.lesions}
    added_ids = {int(l.id) for l in added}
    lesions.update({int(l.id): l for l in added})
    grid = TileGrid(image.width, image.height, TILE_SIZE, TILE_OVERLAP)
    photo: dict[str, Optional[np.ndarray]] = {}
    rows = []
    now = utc_now()
    for lesion_id, d in sorted(decisive.items()):
        lesion = lesions.get(int(lesion_id))
        state = "add" if int(lesion_id) in added_ids else states.get(int(lesion_id))
        if lesion is None or lesion.mask is None or state not in DECISION_NAMES:
            continue  # undone, or an added lesion rejected again: no example
        decision = DECISION_NAMES[state]
        tile = grid.best_tile(lesion.x, lesion.y)
        tile_rel: Optional[str] = f"annotations/tiles/{image.sha256[:16]}_r{tile.row}_c{tile.col}.png"
        if not store.path(tile_rel).exists():
            if "rgb" not in photo:  # loaded once, and only when a tile is still missing
                photo["rgb"] = None
                with contextlib.suppress(StoreError):
                    photo["rgb"] = store.load_image_rgb(image.id)
            if photo["rgb"] is None:
                tile_rel = None  # the photograph is gone: the example has no tile
            else:
                import cv2

                ok, png = cv2.imencode(".png", grid.cut(photo["rgb"], tile)[:, :, ::-1])
                if not ok:
                    raise StoreError("A tile could not be encoded.")
                files.atomic_write(store.path(tile_rel), png.tobytes())
        mask = np.asarray(lesion.mask, dtype=bool)
        box = prompt_box(lesion, image.width, image.height)
        rows.append((
            result_id, image.id, int(lesion_id), decision, d.seq, d.actor, d.created_at,
            float(lesion.x), float(lesion.y), *box, int(lesion.bbox[0]), int(lesion.bbox[1]),
            mask.shape[1], mask.shape[0], np.packbits(mask).tobytes(), tile.row, tile.col, tile.x0, tile.y0,
            tile.size, tile_rel, image.sha256, None if state == "add" else float(lesion.score),
            lesion.source, json.dumps({k: float(v) for k, v in (lesion.features or {}).items()
                                       if isinstance(v, (int, float))}, sort_keys=True),
            record.model_name, record.model_sha256, versions.get(record.model_sha256, "unknown"), now,
        ))
    return rows


def list_annotations(store: Any, decision: Optional[str] = None) -> list[Annotation]:
    """Return the examples in decision order, optionally only one decision kind."""
    sql, args = "SELECT * FROM annotations", ()
    if decision is not None:
        sql, args = sql + " WHERE decision = ?", (decision,)
    out = []
    for r in store.connection.execute(sql + " ORDER BY decision_seq, lesion_id", args).fetchall():
        h, w = r["mask_h"], r["mask_w"]
        mask = np.unpackbits(np.frombuffer(r["mask"], np.uint8))[: h * w].reshape(h, w).astype(bool)
        out.append(Annotation(
            id=r["id"], result_id=r["result_id"], lesion_id=r["lesion_id"], decision=r["decision"],
            actor=r["actor"], decided_at=r["decided_at"], x=r["x"], y=r["y"],
            box=(r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"]), mask_origin=(r["mask_x0"], r["mask_y0"]),
            mask=mask, tile=(r["tile_row"], r["tile_col"], r["tile_x0"], r["tile_y0"], r["tile_size"]),
            tile_path=r["tile_path"], image_sha256=r["image_sha256"], score=r["score"], source=r["source"],
            features=json.loads(r["features_json"]), model_name=r["model_name"], model_sha256=r["model_sha256"],
            model_version=r["model_version"]))
    return out


def patient_groups(store: Any) -> dict[int, str]:
    """Map each annotated result to an export-local patient group (``p1``, ``p2``, ... in decision order).

    Why: a fine-tuning split must keep one patient (both eyes, every visit) out of either
    training or validation, or validation measures memory of that retina, yet no patient
    identifier may leave the appliance. The ordinals are drawn afresh from the examples' order
    at each export, so they say only "same patient" and link to nothing outside it.
    """
    groups: dict[str, str] = {}
    out: dict[int, str] = {}
    for r in store.connection.execute(
            "SELECT a.result_id, s.patient_id FROM annotations a JOIN results r ON r.id = a.result_id"
            " JOIN studies s ON s.id = r.study_id ORDER BY a.decision_seq, a.lesion_id").fetchall():
        out[int(r[0])] = groups.setdefault(str(r[1]), f"p{len(groups) + 1}")
    return out


def example_json(a: Annotation, tile_name: str, mask_name: str, group: str = "") -> dict[str, Any]:
    """Return one export line for annotation ``a`` (tile and mask paths relative to DIR).

    ``group`` is the export-local patient group (:func:`patient_groups`); empty means unknown.
    """
    row, col, tx0, ty0, size = a.tile
    return {
        "id": a.id, "tile": tile_name, "mask": mask_name, "label": a.label, "decision": a.decision,
        "box_tile": [a.box[0] - tx0, a.box[1] - ty0, a.box[2] - tx0, a.box[3] - ty0],
        "box_image": list(a.box), "center_tile": [round(a.x - tx0, 2), round(a.y - ty0, 2)],
        "center_image": [round(a.x, 2), round(a.y, 2)], "actor": a.actor, "decided_at": a.decided_at,
        "score": a.score, "source": a.source, "features": a.features,
        "model": {"name": a.model_name, "sha256": a.model_sha256, "version": a.model_version},
        "image_sha256": a.image_sha256, "tile_grid": {"row": row, "col": col, "x0": tx0, "y0": ty0, "size": size},
        "group": group or a.image_sha256[:16],
    }


def tile_mask(a: Annotation) -> np.ndarray:
    """Return the annotation's mask as a tile-size uint8 image (255 on the lesion)."""
    _, _, tx0, ty0, size = a.tile
    out = np.zeros((size, size), np.uint8)
    mx, my = a.mask_origin[0] - tx0, a.mask_origin[1] - ty0
    h, w = a.mask.shape
    ys, xs = slice(max(0, my), min(size, my + h)), slice(max(0, mx), min(size, mx + w))
    crop = a.mask[ys.start - my:ys.stop - my, xs.start - mx:xs.stop - mx]
    out[ys, xs][crop] = 255
    return out


def export(store: Any, out_dir: Path) -> dict[str, Any]:
    """Write every example to ``out_dir`` in the documented layout; return the manifest.

    Examples whose tile could not be saved (photograph already removed) are skipped and
    counted as ``skipped_no_tile``.

    Raises
    ------
    StoreError
        If ``out_dir`` exists and is not empty.
    """
    import cv2

    refresh(store)
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise StoreError(f"The export folder {out_dir} is not empty.")
    # Owner-only (0700 folders, 0600 files) as in the store: the tiles are crops of patients'
    # retinas; with the process umask a root export was readable by every local user.
    files.makedirs_durable(out_dir / "tiles")
    files.makedirs_durable(out_dir / "masks")
    digest = hashlib.sha256()
    counts: dict[str, int] = {"accepted": 0, "rejected": 0, "added": 0, "skipped_no_tile": 0}
    lines = []
    groups = patient_groups(store)
    for a in list_annotations(store):
        if not a.tile_path or not store.path(a.tile_path).is_file():
            counts["skipped_no_tile"] += 1
            continue
        tile_name = f"tiles/{Path(a.tile_path).name}"
        if not (out_dir / tile_name).exists():
            files.atomic_write(out_dir / tile_name, store.path(a.tile_path).read_bytes())
        mask_name = f"masks/{a.id}.png"
        ok, png = cv2.imencode(".png", tile_mask(a))
        if not ok:
            raise StoreError("A mask could not be encoded.")
        files.atomic_write(out_dir / mask_name, png.tobytes())
        line = json.dumps(example_json(a, tile_name, mask_name, groups.get(a.result_id, "")), sort_keys=True)
        lines.append(line)
        digest.update(line.encode() + b"\n")
        digest.update(files.sha256_file(out_dir / tile_name).encode())
        digest.update(hashlib.sha256(png.tobytes()).hexdigest().encode())
        counts[a.decision] += 1
    files.atomic_write(out_dir / "annotations.jsonl", "".join(line + "\n" for line in lines).encode())
    manifest = {"format": EXPORT_FORMAT, "exported_at": utc_now(), "count": len(lines), "counts": counts,
                "dataset_sha256": digest.hexdigest(), "tile_size": TILE_SIZE, "tile_overlap": TILE_OVERLAP}
    files.atomic_write(out_dir / "manifest.json", (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
    logger.info("exported %d annotations to %s", len(lines), out_dir)
    return manifest
