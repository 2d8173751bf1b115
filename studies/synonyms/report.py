"""The synonym analysis's files: JSON numbers, a markdown summary, Fig.8 as a PNG, the pairs as TSV.
Cosines are stored as they are and printed x 100 as "points", the unit of the paper's "1.4 points higher"."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tabulate import tabulate

from fairseq_headless.files import write_json_atomic, write_text_atomic as write_atomic
from studies import figures
from .synonyms import MODELS, SynonymAnalysis

FILES = {"json": "synonyms.json", "markdown": "synonyms.md", "png": "synonyms.png", "pairs": "pairs.tsv"}


def points(x) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def _p(test) -> str:
    return "—" if not test or test.get("p_value") is None else f"{test['p_value']:.3g}"


def markdown(result: dict, title: str) -> str:
    syn = result["synonyms"]
    rnd = result.get("random_pairs")
    diff = syn["headless_minus_vanilla"]
    excluded = result["pairs_excluded"]
    lines = [
        f"# Synonym similarity of input embeddings: {title}",
        "",
        "Cosine similarity between the input embeddings of the two words of each synonym pair, "
        "x 100 (paper App. A, Fig.8).",
        "",
        f"- lexicon: {result['lexicon']['source']}: {result['pairs_in_lexicon']:,} pairs of "
        f"{result['words_in_lexicon']:,} words",
        f"- kept: **{result['pairs_kept']:,} pairs** whose two words are single tokens in both models "
        f"(word form `{result['word_form']}`); excluded: {excluded['not_single_token']:,} with a word that is not a "
        f"single token ({excluded['of_which_multi_token']:,} several tokens, "
        f"{excluded['of_which_special_or_unknown_token']:,} unknown/special), {excluded['same_token']:,} whose two "
        "words are one token",
        "",
    ]
    rows = [["synonyms: mean", points(syn["headless"]["mean"]), points(syn["vanilla"]["mean"]),
             f"**{points(diff['mean_difference'])}**"],
            ["synonyms: std", points(syn["headless"]["std"]), points(syn["vanilla"]["std"]),
             points(diff["std_difference"])],
            ["synonyms: median", points(syn["headless"]["median"]), points(syn["vanilla"]["median"]), ""]]
    if rnd is not None:
        effect = result["synonym_minus_random"]
        rows += [[f"random pairs ({rnd['pairs_drawn']:,}): mean", points(rnd["headless"]["mean"]),
                  points(rnd["vanilla"]["mean"]), points(rnd["headless_minus_vanilla"]["mean_difference"])],
                 ["synonyms − random pairs", points(effect["headless"]), points(effect["vanilla"]),
                  points(None if None in effect.values() else effect["headless"] - effect["vanilla"])]]
    lines.append(tabulate(rows, ["", "headless", "vanilla", "headless − vanilla"], tablefmt="github",
                          disable_numparse=True, colalign=("left", "right", "right", "right")))
    share = diff["headless_higher_share"]
    lines += [
        "",
        f"Pairs where the headless cosine is higher: {points(share)}%. Paired tests of headless against vanilla "
        f"on the synonym pairs: t-test p = {_p(diff['paired_t_test'])}, Wilcoxon signed-rank "
        f"p = {_p(diff['wilcoxon_signed_rank'])}.",
        "",
    ]
    for name in MODELS:
        info = result["models"][name]
        lines.append(f"- {name}: `{info['path']}` ({info['type']}, {info['embedding_rows']:,} x "
                     f"{info['embedding_dim']} embeddings, {info['single_token_words']:,} lexicon words are one token)")
    if rnd is not None:
        lines += ["", f"Random pairs: drawn from the kept pairs' {rnd['words']:,} words, never a lexicon pair, seed "
                      f"{rnd['seed']}; a model whose embeddings are all more alike raises both rows, so "
                      "\"synonyms − random pairs\" is the synonym effect of each model."]
    return "\n".join(lines) + "\n"


def plot(path: Path, analysis: SynonymAnalysis, title: str) -> None:
    """Fig.8: the synonym cosine distributions of both models, overlaid (random pairs dashed)."""
    colors = {"headless": "tab:orange", "vanilla": "tab:blue"}
    series = [analysis.synonym_cosines[n] for n in MODELS]
    if analysis.random_cosines is not None:
        series += [analysis.random_cosines[n] for n in MODELS]
    values = np.concatenate([s[np.isfinite(s)] for s in series])
    low, high = (float(values.min()), float(values.max())) if len(values) else (-1.0, 1.0)
    if high - low < 1e-6:
        low, high = low - 0.05, high + 0.05
    bins = np.linspace(low, high, max(10, min(60, int(np.sqrt(len(analysis.synonym_pairs.words))) + 5)))
    fig, axes = figures.grid(1, 1, 7, 4)
    ax = axes[0][0]
    for name in MODELS:
        cos = analysis.synonym_cosines[name]
        stats = analysis.result["synonyms"][name]
        ax.hist(cos[np.isfinite(cos)], bins=bins, density=True, histtype="stepfilled", alpha=0.35,
                color=colors[name], label=f"{name}: synonyms (mean {points(stats['mean'])})")
        ax.hist(cos[np.isfinite(cos)], bins=bins, density=True, histtype="step", color=colors[name], linewidth=1.2)
        if stats["mean"] is not None:
            ax.axvline(stats["mean"], color=colors[name], linewidth=1)
        if analysis.random_cosines is not None and len(analysis.random_cosines[name]):
            rnd = analysis.random_cosines[name]
            ax.hist(rnd[np.isfinite(rnd)], bins=bins, density=True, histtype="step", linestyle="--",
                    color=colors[name], linewidth=1,
                    label=f"{name}: random pairs (mean {points(analysis.result['random_pairs'][name]['mean'])})")
    ax.set_xlabel("cosine similarity of the input embeddings")
    ax.set_ylabel("density")
    ax.set_title(f"{title}: {analysis.result['pairs_kept']:,} synonym pairs")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figures.save(fig, path, dpi=110)


def pairs_tsv(analysis: SynonymAnalysis) -> str:
    """One row per pair (synonyms, then random pairs): words, token ids and cosine in each model."""
    header = ["kind", "word_a", "word_b"] + [f"{n}_{c}" for n in MODELS for c in ("id_a", "id_b")] + [
        f"{n}_cosine" for n in MODELS]
    rows = ["\t".join(header)]
    groups = [("synonym", analysis.synonym_pairs, analysis.synonym_cosines)]
    if analysis.random is not None:
        groups.append(("random", analysis.random, analysis.random_cosines))
    for kind, pairs, cos in groups:
        for k, (a, b) in enumerate(pairs.words):
            ids = [str(int(pairs.ids[n][k, side])) for n in MODELS for side in (0, 1)]
            rows.append("\t".join([kind, a, b, *ids, *(repr(float(cos[n][k])) for n in MODELS)]))
    return "\n".join(rows) + "\n"


def write_report(folder: Path, analysis: SynonymAnalysis, title: str) -> dict:
    """synonyms.json, synonyms.md, synonyms.png and pairs.tsv in ``folder``; returns {kind: path}."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {kind: folder / name for kind, name in FILES.items()}
    analysis.result["files"] = {kind: name for kind, name in FILES.items()}
    write_atomic(paths["pairs"], pairs_tsv(analysis))
    plot(paths["png"], analysis, title)
    write_atomic(paths["markdown"], markdown(analysis.result, title))
    write_json_atomic(paths["json"], analysis.result)  # last: its presence means the run finished
    return paths
