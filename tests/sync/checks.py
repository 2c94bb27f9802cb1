"""The end-state checks every sync test runs: nothing lost, nothing duplicated, nothing corrupt."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import pydicom


@dataclass
class Outcome:
    local_items: int
    server_instances: int
    lost: int
    duplicated: int
    corrupt: int
    undelivered: int


def check_server(store, orthanc, compare_masks: bool = True) -> Outcome:
    """Compare the store's outbox with what Orthanc holds."""
    items = store.outbox()
    instances = orthanc.instances()
    server_uids = [i["MainDicomTags"]["SOPInstanceUID"] for i in instances]
    local_uids = {i.sop_uid for i in items}
    duplicated = len(server_uids) - len(set(server_uids))
    extra = set(server_uids) - local_uids  # an instance the station sent under an unknown UID
    duplicated += len(extra)
    # a study re-sent under a second study UID would show up as an extra study on the server
    lost = corrupt = 0
    for item in items:
        if item.sop_uid not in server_uids:
            lost += 1
            continue
        raw = orthanc.instance_file(item.sop_uid)
        if item.content_sha256 and hashlib.sha256(raw).hexdigest() != item.content_sha256:
            corrupt += 1
            continue
        ds = pydicom.dcmread(io.BytesIO(raw))
        if ds.StudyInstanceUID != item.study_uid or ds.SeriesInstanceUID != item.series_uid:
            corrupt += 1
            continue
        if item.kind == "photo":
            if not np.array_equal(ds.pixel_array, store.load_image_rgb(item.image_id)):
                corrupt += 1
        elif item.kind == "seg" and compare_masks:
            seg = hd.seg.Segmentation.from_dataset(ds)
            local = store.load_result(item.result_id).mask() > 0
            if not np.array_equal(seg.pixel_array.reshape(local.shape) > 0, local):
                corrupt += 1
    undelivered = sum(1 for i in items if i.state != "delivered")
    return Outcome(len(items), len(server_uids), lost, duplicated, corrupt, undelivered)


def sr_texts(ds) -> list[str]:
    """Every TEXT value of an SR content tree, depth first."""
    out = []
    for item in ds.get("ContentSequence", []):
        if "TextValue" in item:
            out.append(str(item.TextValue))
        out.extend(sr_texts(item))
    return out
