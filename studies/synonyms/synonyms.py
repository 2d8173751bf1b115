"""Cosine similarity of synonyms' input embeddings, headless against vanilla (paper App. A, Fig.8).

A pair counts when both words are single tokens in both models and two different tokens in each (every
exclusion is counted). Per model: mean, std (ddof 1) and median of the float64 cosines; headless minus
vanilla pair by pair: mean difference, paired t-test, Wilcoxon signed-rank test, share higher. A control
the paper does not have: as many random pairs of the kept pairs' words, so that a model whose embeddings
are all more alike (anisotropy) does not pass for one whose synonyms are.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embeddings import MULTI_TOKEN, SPECIAL_TOKEN, EmbeddingModel
from fairseq_headless.cli import InputError

MODELS = ("headless", "vanilla")


def read_pairs_tsv(path: Path) -> list[tuple[str, str]]:
    """``word<TAB>word`` per line (blank lines and ``#`` comments skipped); each unordered pair once."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--pairs {path}: no such file (expected word<TAB>word per line)")
    pairs, seen = [], set()
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise InputError(f"--pairs {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")]
        if len(fields) != 2 or not all(fields):
            raise InputError(f"--pairs {path}, line {lineno}: expected two words separated by one tab, "
                             f"got {line!r}")
        a, b = fields
        key = (a, b) if a < b else (b, a)
        if a != b and key not in seen:
            seen.add(key)
            pairs.append((a, b))
    if not pairs:
        raise InputError(f"--pairs {path}: no pair of two different words in the file")
    return pairs


@dataclass
class KeptPairs:
    """The pairs that count, with each word's id in each model, and why the others do not."""

    words: list  # [(a, b)]
    ids: dict  # model name -> int array (pairs, 2)
    counts: dict


def select_pairs(pairs, models: dict[str, EmbeddingModel], word_form: str) -> KeptPairs:
    lookup = {name: {} for name in models}

    def token(name, word):
        table = lookup[name]
        if word not in table:
            table[word] = models[name].token_id(word, word_form)
        return table[word]

    kept, ids = [], {name: [] for name in models}
    excluded = {MULTI_TOKEN: 0, SPECIAL_TOKEN: 0, "same_token": 0}
    for a, b in pairs:
        found = {name: (token(name, a), token(name, b)) for name in models}
        outcomes = [t for pair in found.values() for t in pair]
        if MULTI_TOKEN in outcomes:
            excluded[MULTI_TOKEN] += 1
        elif SPECIAL_TOKEN in outcomes:
            excluded[SPECIAL_TOKEN] += 1
        elif any(x == y for x, y in found.values()):
            excluded["same_token"] += 1
        else:
            kept.append((a, b))
            for name, pair in found.items():
                ids[name].append(pair)
    words = {w for pair in pairs for w in pair}
    counts = {
        "pairs_in_lexicon": len(pairs),
        "pairs_kept": len(kept),
        "pairs_excluded": {
            "not_single_token": excluded[MULTI_TOKEN] + excluded[SPECIAL_TOKEN],
            "of_which_multi_token": excluded[MULTI_TOKEN],
            "of_which_special_or_unknown_token": excluded[SPECIAL_TOKEN],
            "same_token": excluded["same_token"],
        },
        "words_in_lexicon": len(words),
        "single_token_words": {name: sum(isinstance(lookup[name].get(w), int) for w in words) for name in models},
    }
    return KeptPairs(kept, {name: np.array(v, dtype=np.int64).reshape(-1, 2) for name, v in ids.items()}, counts)


def cosines(weight, ids: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Cosine similarity, in float64, of the embedding rows ids[:, 0] and ids[:, 1] (a zero row gives NaN)."""
    import torch

    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape)
    rows = weight[torch.from_numpy(unique)].double().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rows = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    out = np.empty(len(ids), dtype=np.float64)
    for start in range(0, len(ids), chunk):  # bounded memory for WordNet's tens of thousands of pairs
        part = inverse[start:start + chunk]
        out[start:start + chunk] = np.einsum("pd,pd->p", rows[part[:, 0]], rows[part[:, 1]])
    return out


def random_pairs(kept: KeptPairs, lexicon, n: int, seed: int) -> KeptPairs:
    """Up to n distinct random pairs of the kept pairs' words: no lexicon pair, two tokens in each model."""
    names = list(kept.ids)
    words, word_ids = [], {}
    for k, pair in enumerate(kept.words):
        for side, word in enumerate(pair):
            if word not in word_ids:
                words.append(word)
                word_ids[word] = tuple(int(kept.ids[name][k, side]) for name in names)
    synonyms = {(a, b) if a < b else (b, a) for a, b in lexicon}
    rng = np.random.default_rng(seed)
    drawn, seen = [], set()
    attempts, max_attempts = 0, 100 * n + 1000  # few words (tiny lexicons) can run out of pairs
    while len(drawn) < n and attempts < max_attempts and len(words) > 1:
        attempts += 1
        i, j = (int(x) for x in rng.integers(len(words), size=2))
        a, b = words[i], words[j]
        key = (a, b) if a < b else (b, a)
        if a == b or key in synonyms or key in seen or any(x == y for x, y in zip(word_ids[a], word_ids[b])):
            continue
        seen.add(key)
        drawn.append((a, b))
    ids = {name: np.array([(word_ids[a][m], word_ids[b][m]) for a, b in drawn], dtype=np.int64).reshape(-1, 2)
           for m, name in enumerate(names)}
    return KeptPairs(drawn, ids, {"pairs_asked": n, "pairs_drawn": len(drawn), "seed": seed,
                                  "words": len(words)})


def _number(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None  # JSON has no NaN


def describe(values: np.ndarray) -> dict:
    n = len(values)
    return {"pairs": n,
            "mean": _number(values.mean()) if n else None,
            "std": _number(values.std(ddof=1)) if n > 1 else (0.0 if n else None),
            "median": _number(np.median(values)) if n else None}


def compare(headless: np.ndarray, vanilla: np.ndarray) -> dict:
    """Headless minus vanilla, pair by pair, and two paired tests (None where undefined, e.g. < 2 pairs)."""
    from scipy import stats

    d = headless - vanilla
    out = {"mean_difference": _number(d.mean()) if len(d) else None,
           "std_difference": _number(d.std(ddof=1)) if len(d) > 1 else None,
           "headless_higher_share": _number((d > 0).mean()) if len(d) else None,
           "paired_t_test": None, "wilcoxon_signed_rank": None}
    if len(d) >= 2 and np.any(d != 0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # constant differences: t is infinite, p undefined -> None
            t = stats.ttest_rel(headless, vanilla)
            w = stats.wilcoxon(headless, vanilla)
        out["paired_t_test"] = {"t": _number(t.statistic), "p_value": _number(t.pvalue)}
        out["wilcoxon_signed_rank"] = {"statistic": _number(w.statistic), "p_value": _number(w.pvalue)}
    return out


@dataclass
class SynonymAnalysis:
    result: dict  # what the JSON holds
    synonym_pairs: KeptPairs
    synonym_cosines: dict  # model name -> float64 array
    random: KeptPairs | None
    random_cosines: dict | None


def analyse(lexicon, models: dict[str, EmbeddingModel], word_form: str = "space", random_count: int | None = None,
            seed: int = 0) -> SynonymAnalysis:
    """``models``: {"headless": EmbeddingModel, "vanilla": EmbeddingModel}; random_count None = as many as kept."""
    if set(models) != set(MODELS):
        raise ValueError(f"models must be {MODELS}")
    kept = select_pairs(lexicon, models, word_form)
    if not kept.words:
        raise InputError(
                         f"none of the {len(lexicon)} lexicon pairs has both words as single tokens in both models "
                         f"(word form {word_form!r}); check the lexicon's language and case, or try --word-form")
    syn = {name: cosines(models[name].weight, kept.ids[name]) for name in MODELS}
    result = {**kept.counts, "word_form": word_form,
              "synonyms": {**{name: describe(syn[name]) for name in MODELS},
                           "headless_minus_vanilla": compare(syn["headless"], syn["vanilla"])}}
    rnd, rnd_cos = None, None
    if random_count is None or random_count > 0:
        rnd = random_pairs(kept, lexicon, len(kept.words) if random_count is None else random_count, seed)
        rnd_cos = {name: cosines(models[name].weight, rnd.ids[name]) for name in MODELS}
        result["random_pairs"] = {**rnd.counts, **{name: describe(rnd_cos[name]) for name in MODELS},
                                  "headless_minus_vanilla": compare(rnd_cos["headless"], rnd_cos["vanilla"])}
        result["synonym_minus_random"] = {
            name: (_number(syn[name].mean() - rnd_cos[name].mean()) if len(rnd.words) else None) for name in MODELS}
    return SynonymAnalysis(result, kept, syn, rnd, rnd_cos)

