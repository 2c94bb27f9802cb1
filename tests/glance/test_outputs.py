"""The per-pixel score map (``score.png``): model masks peak at the dot, saliency masks are flat."""

from __future__ import annotations

import numpy as np

from appliance.glance.lesions import Lesion, SegmentationResult
from appliance.glance.outputs import score_map


def _disc(cx: int, cy: int, r: int, source: str, score: float, lesion_id: int) -> Lesion:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    mask = xx ** 2 + yy ** 2 <= r * r
    return Lesion(id=lesion_id, x=float(cx), y=float(cy), area_px=int(mask.sum()),
                  bbox=(cx - r, cy - r, cx + r + 1, cy + r + 1), score=score, source=source, mask=mask)


def _result(*lesions: Lesion) -> SegmentationResult:
    return SegmentationResult(width=100, height=60, mode="scan", lesions=list(lesions), display_threshold=0.5,
                              model_name="litemedsam", model_sha256="0" * 64)


def test_a_model_mask_peaks_at_the_lesion_centre_and_falls_off_to_its_rim() -> None:
    smap = score_map(_result(_disc(30, 30, 8, "model", 0.8, 1)))
    centre, rim, outside = int(smap[30, 30]), int(smap[30, 38]), int(smap[30, 39])
    assert centre == round(0.8 * 65535)
    assert 0 < rim < centre // 2
    assert outside == 0
    row = smap[30, 30:39].astype(int)
    assert np.all(np.diff(row) < 0)


def test_a_saliency_mask_keeps_one_value() -> None:
    smap = score_map(_result(_disc(70, 30, 5, "saliency", 0.6, 2)))
    values = np.unique(smap[smap > 0])
    assert values.tolist() == [round(0.6 * 65535)]


def test_overlapping_lesions_keep_the_higher_value() -> None:
    low, high = _disc(30, 30, 6, "saliency", 0.5, 1), _disc(33, 30, 6, "model", 0.9, 2)
    smap = score_map(_result(low, high))
    assert int(smap[30, 33]) == round(0.9 * 65535)
    # at the model mask's rim (inside the saliency mask too) its value has faded below 0.5
    assert int(smap[30, 27]) == round(0.5 * 65535)


def test_a_write_cut_short_leaves_no_old_lesions_json_beside_new_images(tmp_path, monkeypatch) -> None:
    """lesions.json marks a complete folder: a rerun into the same folder that fails after the
    first image must not leave the previous run's lesions.json beside the new mask."""
    import pytest

    from appliance.glance import outputs

    out = tmp_path / "out"
    out.mkdir()
    (out / "lesions.json").write_text('{"image": "previous.jpg", "lesions": []}')
    result = SegmentationResult(width=8, height=6, mode="scan", lesions=[], display_threshold=0.5,
                                model_name="m", model_sha256="0" * 64)
    real_png = outputs._png
    calls = []

    def png_then_power_cut(image: np.ndarray) -> bytes:
        calls.append(image.shape)
        if len(calls) > 1:
            raise OSError(28, "No space left on device")
        return real_png(image)

    monkeypatch.setattr(outputs, "_png", png_then_power_cut)
    with pytest.raises(outputs.OutputError):
        outputs.write_outputs(result, np.zeros((6, 8, 3), np.uint8), "new.jpg", out)
    assert (out / "mask.png").exists()
    assert not (out / "lesions.json").exists()
