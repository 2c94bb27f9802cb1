"""SmoothQuant-style rescaling of TinyViT's linear layers before int8 quantization (build time).

TinyViT's LayerNorm outputs carry a few channels with large magnitudes; per-tensor 8-bit
activation quantization then spends its whole range on them and flattens the rest. Each
``LayerNorm -> Linear`` pair (attention ``qkv``, MLP ``fc1``) is rescaled per input
channel: ``LN.weight, LN.bias /= s`` and ``Linear.weight *= s`` (columns), with
``s = max|x|^alpha / max|w|^(1 - alpha)`` measured on calibration tiles. In exact
arithmetic the function is unchanged; it moves quantization difficulty from activations to
weights (Xiao et al., SmoothQuant, ICML 2023).
"""

from __future__ import annotations

import copy
import logging
from typing import Iterable

import torch
import torch.nn as nn

logger = logging.getLogger(__name__)


def _pairs(encoder: nn.Module) -> list[tuple[nn.LayerNorm, nn.Linear]]:
    pairs = []
    for module in encoder.modules():
        norm = getattr(module, "norm", None)
        lin = getattr(module, "qkv", None) or getattr(module, "fc1", None)
        if isinstance(norm, nn.LayerNorm) and isinstance(lin, nn.Linear):
            pairs.append((norm, lin))
    return pairs


@torch.no_grad()
def smooth_encoder(encoder: nn.Module, images: Iterable[torch.Tensor], alpha: float = 0.5) -> nn.Module:
    """Return a rescaled copy of a TinyViT encoder (function unchanged up to rounding).

    Parameters
    ----------
    encoder
        The fp32 image encoder; not modified.
    images
        Calibration inputs, each 1x3xSxS as the encoder takes them.
    alpha
        Migration strength (0: none, 1: all difficulty to the weights).
    """
    enc = copy.deepcopy(encoder).eval()
    pairs = _pairs(enc)
    amax: dict[int, torch.Tensor] = {}
    hooks = []
    for i, (_, lin) in enumerate(pairs):
        def hook(_m, inputs, _out, i=i):
            x = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)
            amax[i] = torch.maximum(amax[i], x) if i in amax else x
        hooks.append(lin.register_forward_hook(hook))
    for image in images:
        enc(image)
    for h in hooks:
        h.remove()
    for i, (norm, lin) in enumerate(pairs):
        wmax = lin.weight.abs().amax(0).clamp(min=1e-5)
        s = (amax[i].clamp(min=1e-5) ** alpha / wmax ** (1 - alpha)).clamp(min=1e-2, max=1e2)
        norm.weight.div_(s)
        norm.bias.div_(s)
        lin.weight.mul_(s.unsqueeze(0))
    logger.info("smoothed %d LayerNorm->Linear pairs (alpha %.2f)", len(pairs), alpha)
    return enc
