"""Train on one split, measure before and after on another: the proof on real data (torch).

Writes into ``out_dir``: ``decoder_state.pt`` (fine-tuned prompt encoder + mask decoder),
``history.json``, ``loss_curve.png`` and ``metrics.json`` with, for the held-out images:
CPM of the candidates ranked by saliency, by the base IoU head and by the fine-tuned one;
the IoU head's ROC AUC for MA vs saliency false positive and MA vs random FOV spot; and
the mean Dice of masks prompted with the annotated MAs' boxes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from appliance.finetune.data import (ADDED, CANDIDATE, SPOT, ExampleSet, dataset_hash, example_group, export_models,
                                     from_candidate_set, from_export, read_export, split_groups)
from appliance.finetune.metrics import cpm, plot_losses, roc_auc
from appliance.finetune.train import Batches, TrainParams, decoder_state, predict, train

logger = logging.getLogger(__name__)


def split_metrics(ex: ExampleSet, pred: dict[str, np.ndarray]) -> dict[str, Any]:
    """Figures of one model on one split (see the module docstring)."""
    cand = ex.kinds == CANDIDATE
    ma = (ex.labels > 0) & (ex.kinds != SPOT)
    spot_or_ma = (ex.kinds == SPOT) | ma
    out = {
        "cpm_iou": cpm(pred["score"][cand], ex.xy[cand], ex.image_of[cand], ex.truth),
        "auc_ma_vs_saliency_fp": roc_auc(pred["score"][cand], ex.labels[cand]),
        "auc_ma_vs_spot": roc_auc(pred["score"][spot_or_ma], ex.labels[spot_or_ma]),
        "dice_truth_boxes": float(pred["dice"][ex.kinds == ADDED].mean()),
        "dice_candidate_hits": float(pred["dice"][cand & (ex.labels > 0)].mean()) if (cand & (ex.labels > 0)).any() else None,
        "loss": float(pred["loss"]),
    }
    return out


def check_disjoint(splits: dict[str, Sequence[str]]) -> None:
    """Refuse splits that share a photograph: figures on an image trained on measure memory.

    Raises
    ------
    ValueError
        Naming the shared ids and the splits that hold them.
    """
    names = list(splits)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = sorted(set(splits[a]) & set(splits[b]))
            if shared:
                raise ValueError(f"{', '.join(shared[:5])} {'is' if len(shared) == 1 else 'are'} in both the {a} "
                                 f"and the {b} split; each photograph belongs to one split.")


def run_proof(set_path: Path, data_dir: Path, out_dir: Path, train_ids: Sequence[str], val_ids: Sequence[str],
              test_ids: Sequence[str], params: TrainParams, weights: Optional[Path] = None,
              device: str = "auto", base_sha256: str = "", progress: bool = True,
              spots_per_image: int = 40) -> dict[str, Any]:
    """Run the whole proof; return the metrics document (also written to ``metrics.json``).

    Raises
    ------
    ValueError
        If two splits share an image id (:func:`check_disjoint`).
    """
    check_disjoint({"train": train_ids, "val": val_ids, "test": test_ids})
    import torch

    from appliance.finetune.model import encode_tiles, load_model

    started = time.time()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(weights).to(device)
    splits = {name: from_candidate_set(set_path, data_dir, ids, seed=params.seed, spots_per_image=spots_per_image)
              for name, ids in (("train", train_ids), ("val", val_ids), ("test", test_ids))}
    batches = {}
    for name, ex in splits.items():
        emb = encode_tiles(model, ex.tiles, device, progress=progress)
        batches[name] = Batches(ex, emb, device)
        logger.info("%s: %d tiles, %d examples (%d MA)", name, len(ex.tiles), len(ex), int((ex.labels > 0).sum()))
    test = splits["test"]
    pred_before = predict(model, batches["test"], params)
    before = split_metrics(test, pred_before)
    cand = test.kinds == CANDIDATE
    sal = np.nan_to_num(test.saliency[cand], nan=-1e9)
    before["cpm_saliency"] = cpm(sal, test.xy[cand], test.image_of[cand], test.truth)
    model, history = train(model, batches["train"], batches["val"], params, progress=progress)
    pred_after = predict(model, batches["test"], params)
    after = split_metrics(test, pred_after)
    np.savez_compressed(out_dir / "test_scores.npz", score_before=pred_before["score"], score_after=pred_after["score"],
                        dice_before=pred_before["dice"], dice_after=pred_after["dice"], xy=test.xy, kinds=test.kinds,
                        labels=test.labels, image_of=test.image_of, saliency=test.saliency,
                        truth_centers=np.concatenate([t[0] for t in test.truth]),
                        truth_radii=np.concatenate([t[1] for t in test.truth]),
                        truth_image=np.concatenate([np.full(len(t[1]), i) for i, t in enumerate(test.truth)]))
    state = decoder_state(model)
    torch.save(state, out_dir / "decoder_state.pt")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_losses(history, out_dir / "loss_curve.png")
    set_doc = json.loads(Path(set_path).read_text())
    doc = {
        "base_model_sha256": base_sha256,
        "data_sha256": set_doc.get("data_sha256"),
        "candidate_set_sha256": hashlib.sha256(Path(set_path).read_bytes()).hexdigest(),
        "train_examples_sha256": dataset_hash(splits["train"]),
        "splits": {"train": list(train_ids), "val": list(val_ids), "test": list(test_ids)},
        "counts": {name: {"tiles": int(len(ex.tiles)), "examples": int(len(ex)),
                          "ma": int(((ex.labels > 0) & (ex.kinds != SPOT)).sum()),
                          "rejected": int(((ex.labels == 0) & (ex.kinds == CANDIDATE)).sum()),
                          "spots": int((ex.kinds == SPOT).sum())} for name, ex in splits.items()},
        "test_before": before,
        "test_after": after,
        **_run_record(history, params, device, started),
    }
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1))
    return doc


def _run_record(history: list[dict], params: Any, device: str, started: float) -> dict[str, Any]:
    """What both kinds of run record about the training itself: settings, best epoch, machine."""
    import torch

    key = (lambda r: r["val_loss"]) if params.monitor == "loss" else (lambda r: -r["val_auc_candidates"])
    best_row = min(history, key=key) if history else {}
    return {
        "hyper_parameters": params.as_dict(),
        "epochs_run": len(history),
        "best_epoch": best_row.get("epoch", 0),
        "best_val": {k: v for k, v in best_row.items() if k.startswith("val_")},
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "seconds": round(time.time() - started, 1),
    }


def decision_metrics(ex: ExampleSet, pred: dict[str, np.ndarray]) -> dict[str, Any]:
    """Figures on clinicians' decisions (no ground-truth masks, so no CPM): how the IoU head
    ranks accepted above rejected candidates, the Dice of added lesions' masks, the loss."""
    cand = ex.kinds == CANDIDATE
    added = ex.kinds == ADDED
    return {"auc_accepted_vs_rejected": roc_auc(pred["score"][cand], ex.labels[cand]),
            "dice_added": float(pred["dice"][added].mean()) if added.any() else None,
            "loss": float(pred["loss"])}


def run_annotations(export_dir: Path, out_dir: Path, params: TrainParams, weights: Optional[Path] = None,
                    device: str = "auto", base_sha256: str = "", progress: bool = True,
                    val_fraction: float = 0.2) -> dict[str, Any]:
    """Fine-tune on an annotations export (clinicians' decisions); return the metrics document.

    The export's patient groups are split so that no patient is on both the training and the
    validation side; validation picks the epoch kept and gives the before/after figures.
    Writes what :func:`run_proof` writes, with ``data_sha256`` the export's ``dataset_sha256``
    and ``annotation_models`` the models that proposed the candidates (checked at export).

    Raises
    ------
    ValueError
        If the export is corrupt, has fewer than two patients, or a side lacks an MA or a
        rejected candidate (an IoU head trained on one class only learns to say one thing).
    """
    import torch

    from appliance.finetune.model import encode_tiles, load_model

    started = time.time()
    manifest, lines = read_export(export_dir)
    train_groups, val_groups = split_groups([example_group(ex) for ex in lines], val_fraction, params.seed)
    splits = {"train": from_export(export_dir, set(train_groups)), "val": from_export(export_dir, set(val_groups))}
    for name, ex in splits.items():
        cand = ex.kinds == CANDIDATE
        if not (ex.labels > 0).any() or not (ex.labels[cand] == 0).any():
            raise ValueError(f"The {name} split needs at least one accepted or added lesion and one rejected "
                             f"candidate ({int((ex.labels > 0).sum())} and {int((ex.labels[cand] == 0).sum())} here); "
                             "collect more reviewed studies.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(weights).to(device)
    batches = {name: Batches(ex, encode_tiles(model, ex.tiles, device, progress=progress), device)
               for name, ex in splits.items()}
    before = decision_metrics(splits["val"], predict(model, batches["val"], params))
    model, history = train(model, batches["train"], batches["val"], params, progress=progress)
    after = decision_metrics(splits["val"], predict(model, batches["val"], params))
    torch.save(decoder_state(model), out_dir / "decoder_state.pt")
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    plot_losses(history, out_dir / "loss_curve.png")
    doc = {
        "source": "annotations",
        "base_model_sha256": base_sha256,
        "data_sha256": manifest.get("dataset_sha256"),
        "annotation_models": export_models(lines),
        "train_examples_sha256": dataset_hash(splits["train"]),
        "splits": {"train": train_groups, "val": val_groups, "test": []},
        "counts": {name: {"tiles": int(len(ex.tiles)), "examples": int(len(ex)), "images": len(ex.image_ids),
                          "ma": int((ex.labels > 0).sum()),
                          "rejected": int(((ex.labels == 0) & (ex.kinds == CANDIDATE)).sum())}
                   for name, ex in splits.items()},
        "test_before": before,
        "test_after": after,
        **_run_record(history, params, device, started),
    }
    (out_dir / "metrics.json").write_text(json.dumps(doc, indent=1))
    return doc
