"""The stored model: plain JSON data, loaded without running code, predicting with numpy.

A model version is one JSON document::

    {"format": "mailgate.linear-text/1", "queues": [...], "features": [...], "idf": [...],
     "coef": [[per feature, one weight per queue]...], "intercept": [...],
     "calibration": [[a, b] per queue], "binary": false, "info": {...}}

``coef``/``intercept`` are a linear model's (one-vs-rest linear SVM);
``calibration`` is Platt scaling per queue, p = 1 / (1 + exp(a * score + b)), fitted on
cross-validated scores (scikit-learn's ``CalibratedClassifierCV``, sigmoid), then normalised
over queues, so a 0.7 threshold means roughly "right 7 times in 10". ``binary`` models (two
queues) have one score column for the second queue, as scikit-learn does.

Why not pickle or joblib: unpickling runs whatever the bytes say (DESIGN.md: a model is data,
never code). `load_model` accepts only this JSON shape: anything else — a pickle, a truncated
file, a NaN weight, mismatched lengths — is a `ModelError`, never executed or half-used.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mailgate.classifier.features import FloatArray, Vectorizer

FORMAT = "mailgate.linear-text/1"
MAX_MODEL_BYTES = 256 * 1024 * 1024
TOP_FEATURES = 5


class ModelError(ValueError):
    """Stored bytes that are not a valid model (never loaded, never executed)."""


@dataclass(frozen=True)
class Prediction:
    """The model's queue for one message, how sure it is, and the terms that drove it."""

    queue: str
    confidence: float
    features: list[str]
    scores: dict[str, float] = field(default_factory=dict)
    """Every queue's calibrated probability (for evaluation sweeps)."""


def describe_feature(name: str) -> str:
    """A feature as a support lead reads it: a word, a phrase, ``subject: x``, or ``…frag…``."""
    kind, _, text = name.partition(":")
    if kind == "s":
        return f"subject: {text}"
    if kind == "c":
        return f"…{text.strip()}…"
    return text


class LinearModel:
    """See the module docstring."""

    def __init__(
        self,
        queues: list[str],
        vectorizer: Vectorizer,
        coef: FloatArray,
        intercept: FloatArray,
        calibration: FloatArray,
        *,
        binary: bool = False,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.queues = queues
        self.vectorizer = vectorizer
        self.coef = coef  # (features, columns)
        self.intercept = intercept
        self.calibration = calibration  # (columns, 2)
        self.binary = binary
        self.info: dict[str, Any] = dict(info or {})

    # ------------------------------------------------------------------ prediction

    def probabilities(self, idx: Any, values: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(calibrated probability per queue, raw score per column) of a vectorized message."""
        scores = values @ self.coef[idx] + self.intercept if len(idx) else self.intercept.copy()
        a, b = self.calibration[:, 0], self.calibration[:, 1]
        platt = 1.0 / (1.0 + np.exp(np.clip(a * scores + b, -500, 500)))
        if self.binary:
            p1 = float(platt[0])
            return np.array([1.0 - p1, p1]), scores
        total = float(platt.sum())
        if total <= 0:
            return np.full(len(self.queues), 1.0 / len(self.queues)), scores
        return platt / total, scores

    def predict(self, subject: str, body: str, *, top: int = TOP_FEATURES) -> Prediction:
        idx, values = self.vectorizer.transform(subject, body)
        probs, _ = self.probabilities(idx, values)
        k = int(np.argmax(probs))
        return Prediction(
            queue=self.queues[k],
            confidence=float(probs[k]),
            features=self.explain(idx, values, k, top=top),
            scores={q: float(p) for q, p in zip(self.queues, probs, strict=True)},
        )

    def explain(
        self, idx: Any, values: FloatArray, k: int, *, top: int = TOP_FEATURES
    ) -> list[str]:
        """The message's terms that pushed hardest towards queue ``k`` (value x weight)."""
        if not len(idx) or top <= 0:
            return []
        if self.binary:
            weights = self.coef[idx, 0] * (1.0 if k == 1 else -1.0)
        else:
            weights = self.coef[idx, k]
        contrib = values * weights
        order = np.argsort(-contrib)
        out: list[str] = []
        for j in order:
            if contrib[j] <= 0 or len(out) >= top:
                break
            text = describe_feature(self.vectorizer.features[int(idx[j])])
            if text not in out:
                out.append(text)
        return out

    def top_terms(self, queue: str, n: int = 10) -> list[str]:
        """The features with the largest weight for ``queue`` overall (``model show``)."""
        k = self.queues.index(queue)
        col = self.coef[:, 0] * (1.0 if k == 1 else -1.0) if self.binary else self.coef[:, k]
        order = np.argsort(-col)[: n * 3]
        out: list[str] = []
        for j in order:
            text = describe_feature(self.vectorizer.features[int(j)])
            if text not in out:
                out.append(text)
            if len(out) >= n:
                break
        return out

    # ------------------------------------------------------------------ storage

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "queues": self.queues,
            "features": self.vectorizer.features,
            "idf": [round(float(x), 6) for x in self.vectorizer.idf],
            "coef": [[round(float(x), 6) for x in row] for row in self.coef],
            "intercept": [round(float(x), 6) for x in self.intercept],
            "calibration": [[round(float(x), 6) for x in row] for row in self.calibration],
            "binary": self.binary,
            "info": self.info,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), ensure_ascii=False, separators=(",", ":"))


def _floats(value: Any, what: str, length: int | None = None) -> list[float]:
    if not isinstance(value, list) or (length is not None and len(value) != length):
        raise ModelError(
            f"{what}: expected a list of {length if length is not None else ''} numbers"
        )
    for x in value:
        if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
            raise ModelError(f"{what}: expected finite numbers")
    return [float(x) for x in value]


def load_model(data: bytes | str) -> LinearModel:
    """Parse and check a stored model (JSON only; see the module docstring)."""
    if isinstance(data, bytes):
        if len(data) > MAX_MODEL_BYTES:
            raise ModelError("model too large")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError("not a mailgate model: not UTF-8 JSON (pickles are refused)") from None
    else:
        text = data
    if not text.lstrip().startswith("{"):
        raise ModelError("not a mailgate model: not a JSON object (pickles are refused)")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"not a mailgate model: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelError(f"not a mailgate model: format is not {FORMAT!r}")
    queues = doc.get("queues")
    features = doc.get("features")
    binary = doc.get("binary", False)
    info = doc.get("info", {})
    if (
        not isinstance(queues, list)
        or len(queues) < 2
        or not all(isinstance(q, str) and q for q in queues)
    ):
        raise ModelError("queues: expected at least two queue names")
    if len(set(queues)) != len(queues):
        raise ModelError("queues: names repeat")
    if not isinstance(features, list) or not all(
        isinstance(f, str) and f[:2] in ("w:", "s:", "c:") for f in features
    ):
        raise ModelError("features: expected a list of w:/s:/c: feature names")
    if len(set(features)) != len(features):
        raise ModelError("features: names repeat")
    if not isinstance(binary, bool) or (binary and len(queues) != 2):
        raise ModelError("binary: expected true only for two queues")
    if not isinstance(info, dict):
        raise ModelError("info: expected an object")
    columns = 1 if binary else len(queues)
    idf = _floats(doc.get("idf"), "idf", len(features))
    coef_rows = doc.get("coef")
    if not isinstance(coef_rows, list) or len(coef_rows) != len(features):
        raise ModelError("coef: expected one row per feature")
    coef = np.array(
        [_floats(r, f"coef[{i}]", columns) for i, r in enumerate(coef_rows)], dtype=np.float64
    ).reshape(len(features), columns)
    intercept = np.array(_floats(doc.get("intercept"), "intercept", columns))
    cal_rows = doc.get("calibration")
    if not isinstance(cal_rows, list) or len(cal_rows) != columns:
        raise ModelError("calibration: expected one [a, b] per score column")
    calibration = np.array([_floats(r, "calibration", 2) for r in cal_rows])
    return LinearModel(
        queues,
        Vectorizer(features, idf),
        coef,
        intercept,
        calibration,
        binary=binary,
        info=info,
    )
