"""Message text and features: word 1-2-grams, subject words and character 3-5-grams, TF-IDF.

Why these features: support mail is short, written in many languages, full of typos and
inflections ("erstatten", "Erstattung", "refnud"). Words carry the topic; character n-grams
inside words (``char_wb``) carry it across inflections, compounds and misspellings without a
stemmer per language. Subject words are their own features because the subject is the
customer's summary. Numbers of four or more digits are folded ("#48213" -> "0") so order
numbers do not become vocabulary, but short codes (404, 500) stay.

`Vectorizer` is the one implementation used by training and by prediction, so the stored
model sees exactly the features it was trained on. It is fast on purpose (prediction
budget: 1 ms per 4 KB message): char n-grams are computed once per distinct word and cached
as vocabulary indices.
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

MAX_BODY_CHARS = 4000
"""Characters of the body that are read; support requests say what they want early."""
CHAR_NGRAMS = (3, 5)
SHORT_REPLY = 200
"""A reply shorter than this is read with the text it quotes (a bare "see below" says nothing)."""

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_LONG_NUMBER = re.compile(r"\d{4,}")
_CACHE_LIMIT = 200_000

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def message_text(env: Mapping[str, Any]) -> tuple[str, str]:
    """(subject, body) of an envelope as the model reads them."""
    subject = str(env.get("subject") or "")
    reply = str(env.get("replyText") or "").strip()
    text = str(env.get("text") or "")
    body = reply
    if len(reply) < SHORT_REPLY:
        body = f"{reply}\n{text}" if reply and reply not in text else text or reply
    return subject, body[:MAX_BODY_CHARS]


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens; numbers of 4+ digits folded to ``0``, short codes kept."""
    folded = _LONG_NUMBER.sub("0", unicodedata.normalize("NFKC", text).lower())
    return [t for t in _TOKEN.findall(folded) if len(t) > 1 or t.isdigit()]


def char_grams(word: str) -> list[str]:
    """``char_wb`` n-grams of one word, padded with a space on each side."""
    padded = f" {word} "
    lo, hi = CHAR_NGRAMS
    return [padded[i : i + n] for n in range(lo, hi + 1) for i in range(len(padded) - n + 1)]


def feature_counts(subject: str, body: str) -> Counter[str]:
    """Every feature of one message with its count (``w:`` words, ``s:`` subject, ``c:`` chars).

    Used to build the vocabulary; `Vectorizer.transform` computes the same counts by index.
    """
    words = tokens(subject) + tokens(body)
    counts: Counter[str] = Counter()
    wc = Counter(words)
    for w, n in wc.items():
        counts["w:" + w] += n
        if not w.isdigit():
            for g in char_grams(w):
                counts["c:" + g] += n
    for a, b in itertools.pairwise(words):
        counts[f"w:{a} {b}"] += 1
    for w in set(tokens(subject)):
        counts["s:" + w] += 1
    return counts


def block_of(feature: str) -> int:
    """0 for the word block (``w:``, ``s:``), 1 for the character block (``c:``)."""
    return 1 if feature.startswith("c:") else 0


class Vectorizer:
    """Feature names and idf -> sparse TF-IDF vectors (sublinear tf, l2 per block)."""

    def __init__(self, features: list[str], idf: Iterable[float]) -> None:
        self.features = features
        self.index = {f: i for i, f in enumerate(features)}
        self.idf: FloatArray = np.asarray(list(idf), dtype=np.float64)
        self.blocks: IntArray = np.fromiter((block_of(f) for f in features), dtype=np.int64)
        self._chars: dict[str, IntArray] = {}
        self._empty: IntArray = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.features)

    def _char_index(self, word: str) -> IntArray:
        found = self._chars.get(word)
        if found is None:
            get = self.index.get
            idx = [i for i in (get("c:" + g) for g in char_grams(word)) if i is not None]
            found = np.asarray(idx, dtype=np.int64) if idx else self._empty
            if len(self._chars) >= _CACHE_LIMIT:
                self._chars.clear()
            self._chars[word] = found
        return found

    def transform(self, subject: str, body: str) -> tuple[IntArray, FloatArray]:
        """(feature indices, tf-idf values) of one message; indices are unique."""
        subject_words = tokens(subject)
        words = subject_words + tokens(body)
        get = self.index.get
        parts: list[IntArray] = []
        weights: list[FloatArray] = []
        repeats: list[float] = []
        lengths: list[int] = []
        single: list[int] = []
        single_w: list[float] = []
        for w, n in Counter(words).items():
            i = get("w:" + w)
            if i is not None:
                single.append(i)
                single_w.append(n)
            if not w.isdigit():
                arr = self._char_index(w)
                if len(arr):
                    parts.append(arr)
                    repeats.append(n)
                    lengths.append(len(arr))
        for pair, n in Counter(itertools.pairwise(words)).items():
            i = get(f"w:{pair[0]} {pair[1]}")
            if i is not None:
                single.append(i)
                single_w.append(n)
        for w in set(subject_words):
            i = get("s:" + w)
            if i is not None:
                single.append(i)
                single_w.append(1.0)
        # one weight per char n-gram: its word's count, repeated over the word's n-grams
        weights.append(np.repeat(np.asarray(repeats, dtype=np.float64), lengths))
        parts.append(np.asarray(single, dtype=np.int64))
        weights.append(np.asarray(single_w, dtype=np.float64))
        idx_all = np.concatenate(parts)
        if not len(idx_all):
            return self._empty, np.zeros(0)
        uniq, inverse = np.unique(idx_all, return_inverse=True)
        counts = np.bincount(inverse, weights=np.concatenate(weights))
        values = (1.0 + np.log(counts)) * self.idf[uniq]
        blocks = self.blocks[uniq]
        for b in (0, 1):
            mask = blocks == b
            norm = math.sqrt(float(np.dot(values[mask], values[mask])))
            if norm > 0:
                values[mask] /= norm
        return uniq, values


def fit_vocabulary(
    docs: list[Counter[str]], *, max_word: int = 30_000, max_char: int = 40_000
) -> Vectorizer:
    """Vocabulary and smooth idf from training documents (min df 2 once there are 50 docs)."""
    df: Counter[str] = Counter()
    for counts in docs:
        df.update(counts.keys())
    min_df = 2 if len(docs) >= 50 else 1
    kept = [(f, n) for f, n in df.items() if n >= min_df]
    words = sorted((x for x in kept if block_of(x[0]) == 0), key=lambda x: (-x[1], x[0]))
    chars = sorted((x for x in kept if block_of(x[0]) == 1), key=lambda x: (-x[1], x[0]))
    chosen = sorted([f for f, _ in words[:max_word]] + [f for f, _ in chars[:max_char]])
    n = len(docs)
    idf = [math.log((1 + n) / (1 + df[f])) + 1.0 for f in chosen]
    return Vectorizer(chosen, idf)
