"""A small learned ranker for MA candidates, numpy only at run time.

Why learned: hand rules separate MAs from vessel fragments and noise only roughly (a plain
dark-blob detector scores ~0 CPM on IDRiD); a tiny multilayer perceptron over the
candidate's physical features and its texture-normalised appearance patch ranks far
better. It is fitted on IDRiD_01–12 only (``python -m appliance.eval.fit_ranker``) and
stored as plain JSON next to this module, so the appliance needs neither torch nor
scikit-learn, and the weights are auditable.

All inputs are camera-independent by construction (µm, Weber contrast, contrast over
local texture, shape ratios), which is what lets the ranker travel to other cameras.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from appliance.errors import ModelError

logger = logging.getLogger(__name__)

DEFAULT_RANKER_PATH = Path(__file__).with_name("ranker.json")


@dataclass
class Ranker:
    """An ensemble of small MLPs (a network without hidden layers is logistic regression).

    Attributes
    ----------
    features
        Candidate feature names, in input order.
    log_features
        Those fed as ``log(max(x, 1e-4))`` (sizes, contrasts and ratios are log-normal).
    use_patch
        Whether the flattened appearance patch follows the features.
    mean, std
        Input standardisation.
    members
        Each member is a list of ``(W, b)`` layers; ReLU between layers; the output is a
        logit. Members' logits are averaged.
    meta
        Free-form provenance (training ids, cross-validated CPM).
    """

    features: list[str]
    log_features: list[str]
    use_patch: bool
    mean: np.ndarray
    std: np.ndarray
    members: list[list[tuple[np.ndarray, np.ndarray]]]
    meta: dict

    def inputs(self, feature_rows: Sequence[dict[str, float]],
               patches: Optional[np.ndarray] = None) -> np.ndarray:
        """Build the raw input matrix from feature dicts (and patches, ``(N, S, S)``)."""
        logs = set(self.log_features)
        cols = []
        for name in self.features:
            x = np.array([float(row.get(name, 0.0)) for row in feature_rows], np.float64)
            cols.append(np.log(np.maximum(x, 1e-4)) if name in logs else x)
        X = np.column_stack(cols) if cols else np.zeros((len(feature_rows), 0))
        if self.use_patch:
            if patches is None:
                raise ValueError("This ranker needs the candidates' appearance patches.")
            P = np.clip(np.asarray(patches, np.float64).reshape(len(feature_rows), -1), -20, 20)
            X = np.hstack([X, P])
        return X

    def logits(self, X: np.ndarray) -> np.ndarray:
        """Return the ensemble's mean logit for each row of a raw input matrix."""
        Z = (np.asarray(X, np.float64) - self.mean) / self.std
        Z = np.nan_to_num(Z, nan=0.0, posinf=10.0, neginf=-10.0)
        out = np.zeros(Z.shape[0])
        for layers in self.members:
            h = Z
            for i, (W, b) in enumerate(layers):
                h = h @ W + b
                if i < len(layers) - 1:
                    h = np.maximum(h, 0.0)
            out += h.reshape(-1)
        return out / max(1, len(self.members))

    def probability(self, feature_rows: Sequence[dict[str, float]],
                    patches: Optional[np.ndarray] = None) -> np.ndarray:
        """Return an MA probability in 0..1 for each candidate."""
        if len(feature_rows) == 0:
            return np.zeros(0)
        z = self.logits(self.inputs(feature_rows, patches))
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_json(self) -> dict:
        """Return a JSON-serialisable dict (4 significant digits keep the file small)."""
        def r(a: np.ndarray) -> list:
            return np.vectorize(lambda v: float(f"{v:.4g}"))(np.asarray(a)).tolist()
        return {
            "version": 1, "features": self.features, "log_features": self.log_features,
            "use_patch": self.use_patch, "mean": r(self.mean), "std": r(self.std),
            "members": [[{"W": r(W), "b": r(b)} for W, b in layers] for layers in self.members],
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Ranker":
        """Build a ranker from :meth:`to_json` output.

        Raises
        ------
        ModelError
            If the document is not a version-1 ranker.
        """
        try:
            if data.get("version") != 1:
                raise ModelError("Unsupported ranker version.")
            members = [[(np.asarray(l["W"], np.float64).reshape(len(l["W"]), -1),
                         np.asarray(l["b"], np.float64).reshape(-1)) for l in layers]
                       for layers in data["members"]]
            return cls(features=list(data["features"]), log_features=list(data["log_features"]),
                       use_patch=bool(data["use_patch"]), mean=np.asarray(data["mean"], np.float64),
                       std=np.asarray(data["std"], np.float64), members=members,
                       meta=dict(data.get("meta", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"The ranker file is malformed: {exc}.") from exc


_CACHE: dict[str, Ranker] = {}


def load_ranker(path: Optional[Path] = None) -> Optional[Ranker]:
    """Load (and cache) the ranker JSON; None when the file does not exist.

    Raises
    ------
    ModelError
        If the file exists but cannot be parsed.
    """
    path = Path(path) if path is not None else DEFAULT_RANKER_PATH
    key = str(path.resolve())
    if key in _CACHE:
        return _CACHE[key]
    if not path.is_file():
        logger.info("no ranker at %s; ranking with the hand-built rules alone", path)
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"Cannot read the ranker {path}: {exc}.") from exc
    ranker = Ranker.from_json(data)
    _CACHE[key] = ranker
    return ranker
