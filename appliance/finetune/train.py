"""Training loop: frozen-encoder embeddings in, fine-tuned prompt encoder + mask decoder out (torch).

Objective per example (a box prompt on one tile):

- mask: BCE + Dice between the windowed logits and the annotated MA pixels inside the box
  (empty for a rejected candidate, so "nothing here" is learnt too, at a lower weight);
- score: the IoU head's output is pulled towards 1 for an MA and 0 for a rejected candidate
  (class-balanced squared error), so it ranks MAs above saliency false positives while
  staying on the 0..1 scale the runtime reads.

Deterministic under ``seed`` (seeded shuffles, deterministic kernels); early stopping keeps
the weights of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import copy
import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from appliance.finetune.data import ADDED, CANDIDATE, SPOT, ExampleSet

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    """Hyper-parameters (recorded in the fine-tuned model's lineage)."""

    seed: int = 0
    epochs: int = 40
    batch: int = 128
    lr: float = 1e-4
    weight_decay: float = 1e-4
    patience: int = 6
    score_weight: float = 4.0
    negative_mask_weight: float = 0.3
    box_margin_px: float = 4.0
    #: what early stopping watches on the validation split: "loss" (lower) or "auc" (higher,
    #: the IoU head's MA-vs-rejected ranking)
    monitor: str = "loss"

    def as_dict(self) -> dict[str, Any]:
        """Return the parameters as a plain dict."""
        return asdict(self)


def seed_everything(seed: int) -> None:
    """Seed numpy and torch and ask torch for deterministic kernels."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


class Batches:
    """Device-side tensors of one split and the per-batch targets."""

    def __init__(self, ex: ExampleSet, emb: Any, device: str) -> None:
        import torch

        self.ex, self.emb, self.device = ex, emb, device
        self.truth = torch.from_numpy(ex.tile_truth).to(device)
        self.tile_of = torch.from_numpy(ex.tile_of).to(device)
        self.boxes = torch.from_numpy(ex.boxes).to(device)
        self.labels = torch.from_numpy(ex.labels).to(device)

    def forward(self, model: Any, idx: Any, margin: float) -> tuple[Any, Any, Any, Any]:
        """Return window logits, iou, window targets and window box masks for examples ``idx``."""
        import torch

        from appliance.finetune.model import decode

        boxes = self.boxes[idx]
        low, iou, origin = decode(model, self.emb[self.tile_of[idx]], boxes)
        side = low.shape[-1]
        steps = torch.arange(side, device=low.device)
        ry = (origin[:, 1:2] * 4 + steps).unsqueeze(2)  # Nxsx1 tile rows
        rx = (origin[:, 0:1] * 4 + steps).unsqueeze(1)  # Nx1xs tile cols
        b = self.tile_of[idx].view(-1, 1, 1)
        truth = self.truth[b, ry, rx].float()
        inside = ((rx + 0.5 >= boxes[:, 0].view(-1, 1, 1) - margin) & (rx + 0.5 <= boxes[:, 2].view(-1, 1, 1) + margin)
                  & (ry + 0.5 >= boxes[:, 1].view(-1, 1, 1) - margin) & (ry + 0.5 <= boxes[:, 3].view(-1, 1, 1) + margin))
        return low, iou, truth * inside.float(), inside


def losses(low: Any, iou: Any, target: Any, labels: Any, params: TrainParams, pos_weight: float) -> dict[str, Any]:
    """Return the mask, score and total loss of a batch (means over examples)."""
    import torch
    import torch.nn.functional as F

    bce = F.binary_cross_entropy_with_logits(low, target, reduction="none").mean(dim=(1, 2))
    prob = torch.sigmoid(low)
    inter = (prob * target).sum(dim=(1, 2))
    dice = 1.0 - (2 * inter + 1.0) / (prob.sum(dim=(1, 2)) + target.sum(dim=(1, 2)) + 1.0)
    w_mask = torch.where(labels > 0, torch.ones_like(labels), torch.full_like(labels, params.negative_mask_weight))
    mask_loss = (w_mask * (bce + dice * labels)).sum() / w_mask.sum()
    w_score = torch.where(labels > 0, torch.full_like(labels, pos_weight), torch.ones_like(labels))
    score_loss = (w_score * (iou - labels) ** 2).sum() / w_score.sum()
    return {"mask": mask_loss, "score": score_loss, "total": mask_loss + params.score_weight * score_loss}


def predict(model: Any, data: Batches, params: TrainParams, batch: int = 512) -> dict[str, np.ndarray]:
    """Scores, mask Dice (against the box's annotated pixels) and mean loss over a split."""
    import torch

    n = len(data.ex)
    scores, dices, total, count = [], [], 0.0, 0
    pos_weight = _pos_weight(data.ex)
    model.eval()
    with torch.no_grad():
        for i in range(0, n, batch):
            idx = torch.arange(i, min(n, i + batch), device=data.device)
            low, iou, target, _ = data.forward(model, idx, params.box_margin_px)
            keep = torch.from_numpy(data.ex.kinds[i:i + batch] != SPOT).to(data.device)
            if keep.any():
                loss = losses(low[keep], iou[keep], target[keep], data.labels[idx][keep], params, pos_weight)
                total += float(loss["total"]) * int(keep.sum())
                count += int(keep.sum())
            pred = (low > 0).float()
            inter = (pred * target).sum(dim=(1, 2))
            dices.append(((2 * inter) / (pred.sum(dim=(1, 2)) + target.sum(dim=(1, 2))).clamp(min=1e-6)).cpu().numpy())
            scores.append(iou.float().cpu().numpy())
    return {"score": np.concatenate(scores), "dice": np.concatenate(dices), "loss": np.array(total / max(count, 1))}


def _pos_weight(ex: ExampleSet) -> float:
    train = ex.kinds != SPOT
    pos = float((ex.labels[train] > 0).sum())
    neg = float((ex.labels[train] == 0).sum())
    return neg / pos if pos else 1.0


def train(model: Any, train_set: Batches, val_set: Batches, params: TrainParams,
          progress: bool = True) -> tuple[Any, list[dict[str, float]]]:
    """Fine-tune ``model`` in place; return it with the best validation weights and the history.

    Parameters
    ----------
    model
        LiteMedSAM whose encoder produced the embeddings in ``train_set`` / ``val_set``.
    train_set, val_set
        Examples and their embeddings on the training device.
    params
        Hyper-parameters.
    progress
        Show a tqdm bar per epoch.
    """
    import torch
    from tqdm import tqdm

    from appliance.finetune.metrics import roc_auc
    from appliance.finetune.model import trainable_parameters

    if params.monitor not in ("loss", "auc"):
        raise ValueError(f"monitor must be 'loss' or 'auc', not {params.monitor!r}.")
    seed_everything(params.seed)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=params.lr, weight_decay=params.weight_decay)
    usable = np.flatnonzero(train_set.ex.kinds != SPOT)
    pos_weight = _pos_weight(train_set.ex)
    rng = np.random.default_rng(params.seed)
    history: list[dict[str, float]] = []
    best, best_loss, stale = None, float("inf"), 0
    for epoch in range(params.epochs):
        model.train()
        model.image_encoder.eval()
        order = rng.permutation(usable)
        run = {"mask": 0.0, "score": 0.0, "total": 0.0}
        bar = tqdm(range(0, len(order), params.batch), desc=f"epoch {epoch + 1}", disable=not progress, leave=False)
        for i in bar:
            idx = torch.from_numpy(order[i:i + params.batch]).to(train_set.device)
            low, iou, target, _ = train_set.forward(model, idx, params.box_margin_px)
            loss = losses(low, iou, target, train_set.labels[idx], params, pos_weight)
            opt.zero_grad(set_to_none=True)
            loss["total"].backward()
            opt.step()
            for k in run:
                run[k] += float(loss[k].detach()) * len(idx)
            bar.set_postfix(loss=f"{float(loss['total'].detach()):.4f}")
        val = predict(model, val_set, params)
        cand = val_set.ex.kinds == CANDIDATE
        row = {"epoch": epoch + 1, **{f"train_{k}": v / len(order) for k, v in run.items()},
               "val_loss": float(val["loss"]),
               "val_auc_candidates": roc_auc(val["score"][cand], val_set.ex.labels[cand]),
               "val_dice": float(val["dice"][(val_set.ex.kinds == ADDED)].mean())}
        history.append(row)
        logger.info("epoch %d: %s", epoch + 1, {k: round(v, 4) for k, v in row.items()})
        value = row["val_loss"] if params.monitor == "loss" else -row["val_auc_candidates"]
        if value < best_loss - 1e-5:
            best_loss, stale = value, 0
            best = copy.deepcopy({k: v.detach().cpu().clone() for k, v in model.state_dict().items()
                                  if not k.startswith("image_encoder.")})
        else:
            stale += 1
            if stale >= params.patience:
                logger.info("early stop after epoch %d (best val %s %.4f)", epoch + 1, params.monitor, abs(best_loss))
                break
    if best is not None:
        model.load_state_dict(best, strict=False)
    return model, history


def decoder_state(model: Any) -> dict[str, Any]:
    """The fine-tuned part of the state dict (prompt encoder + mask decoder), on the CPU."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if not k.startswith("image_encoder.")}


def load_decoder_state(model: Any, state: dict[str, Any]) -> Any:
    """Load a :func:`decoder_state` into a full model (the encoder keeps its weights)."""
    missing = [k for k in state if not (k.startswith("prompt_encoder.") or k.startswith("mask_decoder."))]
    if missing:
        raise ValueError(f"Unexpected keys in a decoder state: {missing[:3]}.")
    model.load_state_dict(state, strict=False)
    return model

