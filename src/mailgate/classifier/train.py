"""Training and evaluation with scikit-learn (only the CLI and the bench import this module).

The estimator is a one-vs-rest linear SVM (``LinearSVC``) over `features` (TF-IDF word and
character n-grams), wrapped in ``CalibratedClassifierCV(method="sigmoid", ensemble=False)``:
one linear model fitted on all examples plus a Platt scaling per queue fitted on
cross-validated scores, so the stored model is one coefficient matrix and two numbers per
queue (`model.LinearModel`). Why this model: a support team has hundreds, not millions, of
labels, in several languages; a linear model over n-grams is strong on small text data,
needs no language resources, trains in seconds, predicts in well under a millisecond, and
its weights name the words that decided, which a support lead can check.

`evaluate` scores any model on labelled examples: accuracy, per-queue precision/recall/F1,
the confusion matrix, and coverage/accuracy at a threshold with a sweep, so a team picks the
threshold from its own data.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mailgate.classifier.features import Vectorizer, feature_counts, fit_vocabulary
from mailgate.classifier.model import LinearModel

SEED = 17
CV_FOLDS = 3
SWEEP = tuple(round(0.05 * i, 2) for i in range(0, 20))
Progress = Callable[[str], None]


class TrainError(ValueError):
    """Not enough labelled data to train (says what is missing)."""


@dataclass(frozen=True)
class Example:
    """One labelled message, as the model reads it."""

    subject: str
    body: str
    queue: str
    tags: tuple[str, ...] = ()
    source: str = ""
    """Where it came from (a file path, a message id), for the misrouted list."""


@dataclass
class TrainResult:
    model: LinearModel
    queues: dict[str, int]
    """Examples per learnt queue."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Queues with fewer than ``min_examples`` examples: not learnt."""
    seconds: float = 0.0


def usable(examples: Sequence[Example], min_examples: int) -> tuple[list[Example], dict[str, int]]:
    """The examples of queues with at least ``min_examples`` (and CV_FOLDS) examples."""
    counts = Counter(e.queue for e in examples)
    need = max(min_examples, CV_FOLDS)
    left_out = {q: n for q, n in counts.items() if n < need}
    return [e for e in examples if e.queue not in left_out], left_out


def split(
    examples: Sequence[Example], *, test_size: float = 0.25, seed: int = SEED
) -> tuple[list[Example], list[Example]]:
    """A stratified train/test split with a fixed seed (each queue keeps its share)."""
    from sklearn.model_selection import train_test_split  # type: ignore[import-untyped]

    items = list(examples)
    idx = list(range(len(items)))
    labels = [e.queue for e in items]
    counts = Counter(labels)
    stratify = labels if min(counts.values()) >= 2 else None
    train_idx, test_idx = train_test_split(
        idx, test_size=test_size, random_state=seed, stratify=stratify
    )
    return [items[i] for i in train_idx], [items[i] for i in test_idx]


def matrix(vec: Vectorizer, examples: Sequence[Example]) -> Any:
    """The examples' TF-IDF rows as a SciPy CSR matrix (scikit-learn's input)."""
    from scipy import sparse  # type: ignore[import-untyped]

    rows, cols, vals = [], [], []
    for r, e in enumerate(examples):
        idx, values = vec.transform(e.subject, e.body)
        rows.append(np.full(len(idx), r))
        cols.append(idx)
        vals.append(values)
    return sparse.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(examples), len(vec)),
    )


def train(
    examples: Sequence[Example],
    *,
    min_examples: int = 5,
    seed: int = SEED,
    progress: Progress | None = None,
    info: dict[str, Any] | None = None,
) -> TrainResult:
    """Fit a model on ``examples`` (see the module docstring); raises `TrainError`."""
    from sklearn.calibration import CalibratedClassifierCV  # type: ignore[import-untyped]
    from sklearn.model_selection import StratifiedKFold  # type: ignore[import-untyped]
    from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

    started = time.perf_counter()
    say = progress or (lambda _msg: None)
    kept, left_out = usable(examples, min_examples)
    queues = sorted({e.queue for e in kept})
    if len(queues) < 2:
        raise TrainError(
            f"need at least two queues with {max(min_examples, CV_FOLDS)} or more labelled"
            f" messages each; have {dict(Counter(e.queue for e in examples)) or 'none'}"
        )
    say(f"features of {len(kept)} messages")
    vec = fit_vocabulary([feature_counts(e.subject, e.body) for e in kept])
    x = matrix(vec, kept)
    y = np.array([queues.index(e.queue) for e in kept])
    say(f"fitting {len(queues)} queues over {len(vec)} features")
    # A linear SVM trains in tens of milliseconds on thousands of labels; its margins are not
    # probabilities, which is what the sigmoid calibration is for.
    base = LinearSVC(C=0.5, class_weight="balanced")
    clf = CalibratedClassifierCV(
        base,
        method="sigmoid",
        cv=StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed),
        ensemble=False,
    )
    clf.fit(x, y)
    fitted = clf.calibrated_classifiers_[0]
    est = fitted.estimator
    binary = len(queues) == 2
    coef = np.asarray(est.coef_, dtype=np.float64).T  # (features, columns)
    intercept = np.asarray(est.intercept_, dtype=np.float64)
    calibration = np.array([[float(c.a_), float(c.b_)] for c in fitted.calibrators])
    counts = dict(sorted(Counter(e.queue for e in kept).items()))
    model = LinearModel(
        queues,
        vec,
        coef,
        intercept,
        calibration,
        binary=binary,
        info={**(info or {}), "examples": len(kept), "queues": counts, "features": len(vec)},
    )
    return TrainResult(model, counts, left_out, time.perf_counter() - started)


# --------------------------------------------------------------------------- evaluation


def _f1(p: float | None, r: float | None) -> float | None:
    if p is None or r is None or p + r == 0:
        return None if p is None or r is None else 0.0
    return 2 * p * r / (p + r)


def evaluate(
    model: LinearModel, examples: Sequence[Example], *, threshold: float = 0.7
) -> dict[str, Any]:
    """Scores of ``model`` on ``examples`` (see the module docstring); JSON-ready."""
    preds = [model.predict(e.subject, e.body, top=0) for e in examples]
    total = len(examples)
    truth = [e.queue for e in examples]
    got = [p.queue for p in preds]
    conf = [p.confidence for p in preds]
    labels = sorted(set(truth) | set(got))
    per_queue: dict[str, dict[str, Any]] = {}
    for q in labels:
        tp = sum(1 for t, g in zip(truth, got, strict=True) if t == q and g == q)
        fp = sum(1 for t, g in zip(truth, got, strict=True) if t != q and g == q)
        fn = sum(1 for t, g in zip(truth, got, strict=True) if t == q and g != q)
        precision = tp / (tp + fp) if tp + fp else None
        recall = tp / (tp + fn) if tp + fn else None
        per_queue[q] = {
            "precision": precision,
            "recall": recall,
            "f1": _f1(precision, recall),
            "support": tp + fn,
        }
    matrix_rows = [
        [sum(1 for t, g in zip(truth, got, strict=True) if t == a and g == b) for b in labels]
        for a in labels
    ]

    def at(th: float) -> dict[str, Any]:
        covered = [i for i in range(total) if conf[i] >= th]
        right = sum(1 for i in covered if got[i] == truth[i])
        return {
            "threshold": th,
            "coverage": len(covered) / total if total else None,
            "accuracy": right / len(covered) if covered else None,
        }

    here = at(threshold)
    correct = sum(1 for t, g in zip(truth, got, strict=True) if t == g)
    unknown = sorted(set(truth) - set(model.queues))
    return {
        "total": total,
        "accuracy": correct / total if total else None,
        "threshold": threshold,
        "coverage": here["coverage"],
        "accuracy_at_threshold": here["accuracy"],
        "per_queue": per_queue,
        "confusion": {"labels": labels, "matrix": matrix_rows},
        "sweep": [at(t) for t in SWEEP],
        "unknown_queues": unknown,
        "misrouted": [
            {
                "source": e.source,
                "expected": e.queue,
                "got": p.queue,
                "confidence": round(p.confidence, 3),
            }
            for e, p in zip(examples, preds, strict=True)
            if p.queue != e.queue
        ],
    }
