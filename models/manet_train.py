"""Train the MA network (a small U-Net) on IDRiD_01–12 and export it to ONNX.

Build-time only (torch). Why a dense network: the candidate ranker learns from about 450
annotated MAs seen as isolated patches, too few examples for its features to tell a sharp
round MA from a diffuse choroidal blob or a vessel fragment; a segmentation network learns
from every annotated pixel and every unannotated one around it.

Run (a GPU makes it a few minutes; a CPU works, slowly)::

    python models/manet_train.py --data DIR --out OUT_DIR [--val]

``DIR`` holds ``images/IDRiD_NN.jpg``, ``masks/IDRiD_NN_MA.png`` and ``fov/IDRiD_NN.png``
(the appliance's field-of-view mask, :func:`appliance.imaging.fov.find_fov`). Only the
tuning split IDRiD_01–12 is read. ``--val`` trains on 01–08 and reports validation figures
on 09–12 (for choosing the settings); without it all twelve train the shipped network.
Input: :func:`appliance.eval.manet.contrast_input`, loaded from its file so
training and run time share the numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("manet_input", ROOT / "appliance/eval/manet.py")
manet_input = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(manet_input)


class UNet(nn.Module):
    """Three poolings, ``base``-2x-4x-8x channels, batch norm, one logit per pixel."""

    def __init__(self, base: int = 16, cin: int = manet_input.CHANNELS) -> None:
        super().__init__()

        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        c = [base, base * 2, base * 4, base * 8]
        self.enc = nn.ModuleList([block(cin, c[0]), block(c[0], c[1]), block(c[1], c[2]), block(c[2], c[3])])
        self.up = nn.ModuleList([nn.ConvTranspose2d(c[i + 1], c[i], 2, stride=2) for i in range(3)])
        self.dec = nn.ModuleList([block(2 * c[i], c[i]) for i in range(3)])
        self.head = nn.Conv2d(c[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x)
            if i < 3:
                skips.append(x)
                x = F.max_pool2d(x, 2)
        for i in (2, 1, 0):
            x = self.dec[i](torch.cat([self.up[i](x), skips[i]], 1))
        return self.head(x)


def load(data: Path, ids: list[str]) -> list[dict]:
    out = []
    for i in ids:
        bgr = cv2.imread(str(data / "images" / f"{i}.jpg"), cv2.IMREAD_COLOR)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        fov = cv2.imread(str(data / "fov" / f"{i}.png"), cv2.IMREAD_GRAYSCALE) > 0
        mask = cv2.imread(str(data / "masks" / f"{i}_MA.png"), cv2.IMREAD_GRAYSCALE) > 0
        x = manet_input.contrast_input(rgb, fov)
        ma = np.argwhere(mask)
        inside = np.argwhere(cv2.erode(fov.astype(np.uint8), np.ones((65, 65), np.uint8)) > 0)
        out.append({"id": i, "x": torch.from_numpy(x), "y": torch.from_numpy(mask.astype(np.float32)),
                    "fov": torch.from_numpy(fov), "ma": ma, "inside": inside})
        logger.info("loaded %s: %d MA px", i, len(ma))
    return out


def batch(imgs: list[dict], n: int, size: int, rng: np.random.Generator, dev: torch.device):
    xs, ys = [], []
    for _ in range(n):
        im = imgs[rng.integers(len(imgs))]
        h, w = im["y"].shape
        if len(im["ma"]) and rng.random() < 0.5:
            cy, cx = im["ma"][rng.integers(len(im["ma"]))] + rng.integers(-size // 3, size // 3 + 1, 2)
        else:
            cy, cx = im["inside"][rng.integers(len(im["inside"]))]
        y0 = int(np.clip(cy - size // 2, 0, h - size))
        x0 = int(np.clip(cx - size // 2, 0, w - size))
        xs.append(im["x"][:, y0:y0 + size, x0:x0 + size])
        ys.append(im["y"][None, y0:y0 + size, x0:x0 + size])
    x = torch.stack(xs).to(dev, non_blocking=True)
    y = torch.stack(ys).to(dev, non_blocking=True)
    k = int(rng.integers(8))
    if k & 1:
        x, y = x.flip(-1), y.flip(-1)
    if k & 2:
        x, y = x.flip(-2), y.flip(-2)
    if k & 4:
        x, y = x.transpose(-1, -2), y.transpose(-1, -2)
    gain = torch.empty(x.shape[0], x.shape[1], 1, 1, device=dev).uniform_(0.75, 1.33)
    x = torch.clamp(x * gain + 0.05 * torch.randn_like(x), -manet_input.CLIP, manet_input.CLIP)
    return x.contiguous(), y.contiguous()


@torch.no_grad()
def predict(net: nn.Module, x: torch.Tensor, dev: torch.device) -> np.ndarray:
    net.eval()
    _, h, w = x.shape
    ph, pw = (-h) % 8, (-w) % 8
    xp = F.pad(x[None].to(dev), (0, pw, 0, ph))
    p = torch.sigmoid(net(xp))[0, 0, :h, :w].float().cpu().numpy()
    net.train()
    return p


def average_precision(score: np.ndarray, label: np.ndarray) -> float:
    o = np.argsort(-score, kind="stable")
    hit = label[o]
    if not hit.any():
        return 0.0
    prec = np.cumsum(hit) / np.arange(1, len(hit) + 1)
    return float(prec[hit].mean())


def train(imgs: list[dict], val: list[dict], base: int, steps: int, seed: int, dev: torch.device,
          log: list, batch_size: int = 16, patch: int = 128) -> nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(base).to(dev)
    opt = torch.optim.AdamW(net.parameters(), 2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps, pct_start=0.1)
    t0 = time.time()
    for step in range(steps):
        x, y = batch(imgs, batch_size, patch, rng, dev)
        logit = net(x)
        bce = F.binary_cross_entropy_with_logits(logit, y, pos_weight=torch.tensor(4.0, device=dev))
        p = torch.sigmoid(logit)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = bce + 0.5 * dice
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % max(1, steps // 8) == 0 or step + 1 == steps:
            rec = {"base": base, "step": step + 1, "loss": round(float(loss), 4), "s": round(time.time() - t0, 1)}
            if val and step + 1 == steps:
                aps = []
                for v in val:
                    pr = predict(net, v["x"], dev)
                    fov = v["fov"].numpy()
                    sub = np.random.default_rng(0).random(fov.shape) < 0.1
                    sel = fov & sub
                    aps.append(average_precision(pr[sel], v["y"].cpu().numpy()[sel] > 0))
                rec["val_pixel_ap"] = [round(a, 4) for a in aps]
            logger.info("%s", rec)
            log.append(rec)
    net.eval()
    return net


def export(net: nn.Module, path: Path, meta: dict) -> None:
    net = net.float().cpu().eval()
    dummy = torch.zeros(1, manet_input.CHANNELS, 64, 64)
    torch.onnx.export(net, (dummy,), str(path), input_names=["contrast"], output_names=["logit"],
                      dynamic_axes={"contrast": {0: "n", 2: "h", 3: "w"}, "logit": {0: "n", 2: "h", 3: "w"}},
                      opset_version=17, dynamo=False)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--val", action="store_true")
    ap.add_argument("--both", action="store_true", help="per base: the --val run, then the shipped one")
    ap.add_argument("--bases", default="8")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=128)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(max(1, torch.get_num_threads()))
    ids = [f"IDRiD_{i:02d}" for i in range(1, 13)]
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    imgs = load(args.data, ids)
    for im in imgs:
        im["x"], im["y"] = im["x"].to(dev), im["y"].to(dev)
    args.out.mkdir(parents=True, exist_ok=True)
    for base in [int(b) for b in args.bases.split(",")]:
        for val_run in ([True, False] if args.both else [args.val]):
            log: list = []
            train_imgs, val_imgs = (imgs[:8], imgs[8:]) if val_run else (imgs, [])
            net = train(train_imgs, val_imgs, base, args.steps, args.seed, dev, log, args.batch, args.patch)
            name = f"manet_b{base}_val" if val_run else f"manet_b{base}"
            export(net, args.out / f"{name}.onnx",
                   {"trained_on": [im["id"] for im in train_imgs], "base": base, "steps": args.steps,
                    "seed": args.seed, "log": log, "canonical_um_per_px": manet_input.CANONICAL_UM_PER_PX})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
