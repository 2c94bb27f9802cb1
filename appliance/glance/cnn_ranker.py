"""The CNN candidate ranker: a small convolutional network over full-resolution patches.

Why: the feature MLP (:mod:`appliance.glance.ranker`) sees a candidate on the 8 µm working
grid, where the faint MAs that make up most of the annotations blur into the texture. The
CNN reads :func:`appliance.glance.candidates.cnn_patches` (a 4 µm view of the dot and an
8 µm view of its surroundings, in units of local background and texture, so any camera
maps to the same input) and returns an MA probability. It is trained on IDRiD_01–12 only
(``python -m appliance.eval.fit_cnn_ranker``, torch at build time) and shipped as ONNX
(``ranker_cnn.onnx``) with a JSON sidecar holding its sha256 and provenance; the appliance
runs it with onnxruntime, one batch per detection window. Each candidate's score depends on
its own patch only, so a gaze window scores a candidate exactly as the whole image does.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from appliance.errors import ModelError
from appliance.hashing import sha256_file

logger = logging.getLogger(__name__)

DEFAULT_CNN_PATH = Path(__file__).with_name("ranker_cnn.onnx")
#: Candidates per onnxruntime call. onnxruntime's arena keeps the largest batch's activations
#: (16 channels × 32 × 32 float32 a patch per layer): 128 holds ~8 MB a layer; 1,024 held 67 MB
#: and took as long over a whole photograph (docs/performance.md).
BATCH = 128
#: How the CNN's probability combines with the hand score (see :func:`combine`).
BLENDS = ("cnn", "cnn_hand", "cnn_mlp_hand")


def combine(p_cnn: np.ndarray, hand: np.ndarray, blend: str,
            p_mlp: Optional[np.ndarray] = None) -> np.ndarray:
    """Base score from the CNN probability, the hand score and the feature ranker's.

    ``cnn``: the probability alone; ``cnn_hand``: its geometric mean with the hand score (a
    candidate must convince both the learned appearance model and the physical profile
    rule); ``cnn_mlp_hand``: the geometric mean of all three (``p_mlp`` from
    :mod:`appliance.glance.ranker`; they err differently).
    """
    p = np.clip(np.asarray(p_cnn, np.float64), 0.0, 1.0)
    h = np.clip(np.asarray(hand, np.float64), 0.0, 1.0)
    if blend == "cnn":
        return p
    if blend == "cnn_hand":
        return np.sqrt(p * h)
    if blend == "cnn_mlp_hand":
        if p_mlp is None:
            raise ValueError("The cnn_mlp_hand blend needs the feature ranker's probability.")
        return np.cbrt(p * h * np.clip(np.asarray(p_mlp, np.float64), 0.0, 1.0))
    raise ValueError(f"Unknown blend {blend!r}; use one of {BLENDS}.")


@dataclass
class CnnRanker:
    """A loaded CNN ranker.

    Attributes
    ----------
    session
        The onnxruntime inference session (input ``patch``: N×C×S×S float32, output
        ``logit``: N×1).
    meta
        The sidecar JSON: sha256, input shape, steps, blend, training provenance.
    """

    session: object
    meta: dict

    @property
    def blend(self) -> str:
        """str: how the probability combines with the hand score (:func:`combine`)."""
        return str(self.meta.get("blend", "cnn"))

    def probability(self, patches: np.ndarray) -> np.ndarray:
        """Return an MA probability in 0..1 per patch (``(N, C, S, S)``), in batches."""
        x = np.asarray(patches, np.float32)
        if x.ndim != 4:
            raise ValueError("Expected patches shaped (N, C, S, S).")
        out = np.zeros(len(x))
        for i in range(0, len(x), BATCH):
            z = self.session.run(None, {"patch": np.ascontiguousarray(x[i:i + BATCH])})[0]
            out[i:i + BATCH] = np.asarray(z, np.float64).reshape(-1)
        return 1.0 / (1.0 + np.exp(-np.clip(out, -50, 50)))


_CACHE: dict[str, Optional[CnnRanker]] = {}
_DEFAULT_KEY = str(DEFAULT_CNN_PATH.resolve())


def load_cnn_ranker(path: Optional[Path] = None) -> Optional[CnnRanker]:
    """Load (and cache) the ONNX CNN ranker; None when the file does not exist.

    Raises
    ------
    ModelError
        If the sidecar JSON is missing or malformed, or the file's sha256 differs from the
        one the sidecar records (an altered model is refused, not silently used).
    """
    if path is None and _DEFAULT_KEY in _CACHE:  # the common call: no filesystem access
        return _CACHE[_DEFAULT_KEY]
    path = Path(path) if path is not None else DEFAULT_CNN_PATH
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    if not path.is_file():
        logger.info("no CNN ranker at %s; using the feature ranker", path)
        _CACHE[key] = None
        return None
    side = path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read the CNN ranker's metadata {side}: {exc}.") from exc
    digest = sha256_file(path)
    if digest != meta.get("sha256"):
        raise ModelError(f"The CNN ranker {path} does not match its recorded sha256 "
                         f"({digest[:12]}… vs {str(meta.get('sha256'))[:12]}…); refusing it.")
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"Cannot load the CNN ranker {path}: {exc}.") from exc
    ranker = CnnRanker(session, meta)
    _CACHE[key] = ranker
    return ranker


def annotate(candidates: Sequence, ranker: Optional[CnnRanker] = None) -> None:
    """Store each candidate's CNN probability in ``features["cnn_prob"]`` (one batch).

    Candidates without a ``patch_cnn`` are left alone; nothing happens without a model.
    """
    ranker = ranker or load_cnn_ranker()
    todo = [c for c in candidates if getattr(c, "patch_cnn", None) is not None]
    if ranker is None or not todo:
        return
    prob = ranker.probability(np.stack([c.patch_cnn for c in todo]))
    for c, p in zip(todo, prob):
        c.features["cnn_prob"] = float(p)
