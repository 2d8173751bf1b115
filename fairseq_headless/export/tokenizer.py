"""The exported tokenizer: the data folder's own tokenizer with fairseq's ids, checked against the preprocessing path.

Rebuilt as a ``tokenizers`` object with fairseq's ids (tokenizer id + 4 after ``<s> <pad> </s> <unk>``,
dict.txt's ``madeupword`` rows, ``<mask>`` for encoders) and compared with the preprocessing path on the
folder's own validation text."""
from __future__ import annotations

import json
import re
from pathlib import Path

from ..data.binarize import FAIRSEQ_SPECIALS, ID_OFFSET
from ..data.folder import DataFolder
from ..data.tokenizer import GPT2BPETokenizer, SentencePieceTokenizer
from ..cli import Failure, InputError


class ParityError(Failure):
    """The exported model or tokenizer does not reproduce fairseq (nothing is written): exit status 1."""

    def __str__(self) -> str:
        return f"parity check failed, nothing written: {super().__str__()}"

TOKENIZER_CHECK_LINES = 500
SPECIALS = list(FAIRSEQ_SPECIALS)  # <s> <pad> </s> <unk>, fairseq ids 0..3
MASK = "<mask>"
# Tokenizer entries whose text is a fairseq special get this prefix in the exported vocabulary
# (sentencepiece's own <unk>, <s>, </s> become fairseq ids 4, 5, 6 and need names of their own).
RENAMED_PREFIX = "tokenizer:"
SAMPLE_TEXT = [  # always checked, beside the decoded validation lines of the data folder
    "Headless language models learn without predicting.",
    "  Spaces  at both ends,\tand a tab.  ",
    "Numbers 1790-2021, 3.14 and 50,304; symbols: (a) [b] {c} #1 @x $5 % & * + = ? !",
    "Accents and scripts: café, naïve, Ångström, Straße, 東京, Москва, القاهرة, हिन्दी.",
]


def check_dictionary(dictionary, manifest: dict | None, tokenizer_size: int, tokenizer_path: Path) -> int:
    """dict.txt must be prepare_data's layout for this tokenizer (the ids in order, then padding):
    also what docs/data.md's fairseq-preprocess recipe writes; returns its size."""
    symbols = dictionary.symbols
    rows = [s for s in symbols[ID_OFFSET:] if not s.startswith("madeupword")]
    size = (manifest or {}).get("id_mapping", {}).get("dictionary_size")
    if rows != [str(i) for i in range(tokenizer_size)] or (size is not None and len(symbols) != size):
        raise InputError(f"dict.txt and {tokenizer_path} disagree: the dictionary has {len(rows)} tokenizer rows "
                         f"({len(symbols)} entries, manifest says {size}) but the tokenizer has {tokenizer_size} ids "
                         f"0..{tokenizer_size - 1} in order; use the data folder this checkpoint was trained on (a "
                         "frequency-ordered dict.txt, such as fairseq's own GPT-2 one, cannot be exported)")
    return len(symbols)


def spm_to_tokenizers(reference: SentencePieceTokenizer):
    """A `tokenizers` object that encodes like sentencepiece, from the model's ModelProto (not transformers'
    SpmConverter, an internal helper whose output changes across releases). Known differences: docs/export.md."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    proto, path = reference.proto, reference.path
    NORMAL, USER_DEFINED = proto.SentencePiece.NORMAL, proto.SentencePiece.USER_DEFINED
    trainer, spec = proto.trainer_spec, proto.normalizer_spec
    if trainer.treat_whitespace_as_suffix:
        raise InputError(f"{path}: trained with treat_whitespace_as_suffix (\"▁\" ends pieces instead of starting "
                          "them), which the exported fast tokenizer cannot reproduce; retrain without it")
    charsmap = normalizers.Precompiled(spec.precompiled_charsmap) if spec.precompiled_charsmap else None
    user_defined = [p.piece for p in proto.pieces if p.type == USER_DEFINED]
    changed = [piece for piece in user_defined if charsmap and charsmap.normalize_str(piece) != piece]
    if changed:  # sentencepiece matches them before normalizing; the fast tokenizer isolates them after
        raise InputError(f"{path}: user-defined pieces {changed[:5]} are changed by the model's normalization "
                          "map, so the exported tokenizer would not find them; retrain with pieces the map "
                          "leaves alone or with --normalization_rule_name identity")
    if reference.model_type == "bpe":  # rank each normal piece's splits into two normal pieces by its score
        normal = {p.piece: (-p.score, i) for i, p in enumerate(proto.pieces) if p.type == NORMAL}
        ranked = sorted((rank, piece[:k], piece[k:]) for piece, rank in normal.items()
                        for k in range(1, len(piece)) if piece[:k] in normal and piece[k:] in normal)
        model = models.BPE(vocab={p.piece: i for i, p in enumerate(proto.pieces)},
                           merges=[(left, right) for _, left, right in ranked], unk_token=trainer.unk_piece,
                           fuse_unk=True, byte_fallback=trainer.byte_fallback,
                           ignore_merges=bool(user_defined))  # a user-defined chunk is emitted as it is
    else:  # unigram: pieces and their log-probabilities
        model = models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=trainer.unk_id,
                               byte_fallback=trainer.byte_fallback)
    tokenizer = Tokenizer(model)
    steps = [charsmap] if charsmap else []
    if spec.remove_extra_whitespaces:  # spaces only: sentencepiece leaves newlines and tabs alone
        steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""), normalizers.Replace(Regex(" {2,}"), " ")]
    if spec.add_dummy_prefix:
        steps.append(normalizers.Prepend(" "))
    if spec.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "\u2581"))
    tokenizer.normalizer = normalizers.Sequence(steps)
    if user_defined:  # never split, never merged with a neighbour
        pattern = "|".join(re.escape(piece) for piece in sorted(user_defined, key=len, reverse=True))
        tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    steps = [decoders.Replace("\u2581", " ")] + ([decoders.ByteFallback()] if trainer.byte_fallback else [])
    steps.append(decoders.Fuse())
    if spec.add_dummy_prefix:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tokenizer.decoder = decoders.Sequence(steps)
    return tokenizer


def raw_tokenizer(folder: DataFolder):
    """(the preprocessing path's tokenizer, the same tokenizer as a `tokenizers` object)."""
    from tokenizers import Tokenizer
    reference = folder.load_tokenizer()
    path = reference.path
    if isinstance(reference, SentencePieceTokenizer):
        if reference.model_type not in ("unigram", "bpe"):
            raise InputError(f"{path}: sentencepiece model type {reference.model_type} has no "
                              f"fast-tokenizer equivalent (bpe and unigram do)")
        return reference, spm_to_tokenizers(reference)
    if isinstance(reference, GPT2BPETokenizer):
        return reference, reference.to_tokenizers()
    return reference, Tokenizer.from_file(str(path))


def shift_to_fairseq_ids(raw, size: int, encoder: bool, add_bos: bool):
    """The raw tokenizer with fairseq's ids: <s> <pad> </s> <unk>, tokenizer id + 4, madeupwords,
    <mask> (encoders). Returns (tokenizers.Tokenizer, name of the unknown-text token)."""
    from tokenizers import Tokenizer, processors
    tj = json.loads(raw.to_str())
    model = tj["model"]
    reserved = set(SPECIALS) | {MASK}

    def rename(s):
        return RENAMED_PREFIX + s if s in reserved else s

    if model["type"] == "Unigram":
        model["vocab"] = [[s, 0.0] for s in SPECIALS] + [[rename(p), score] for p, score in model["vocab"]]
        if model.get("unk_id") is not None:
            model["unk_id"] += ID_OFFSET
        unk = model["vocab"][model["unk_id"]][0] if model.get("unk_id") is not None else "<unk>"
    elif model["type"] in ("BPE", "WordPiece", "WordLevel"):
        vocab = {s: i for i, s in enumerate(SPECIALS)}
        vocab.update({rename(p): i + ID_OFFSET for p, i in model["vocab"].items()})
        model["vocab"] = vocab
        if model["type"] == "BPE":
            model["merges"] = [[rename(a), rename(b)] for a, b in
                               (m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"])]
        unk = rename(model["unk_token"]) if model.get("unk_token") else "<unk>"
        if model.get("unk_token"):
            model["unk_token"] = unk
    else:
        raise InputError(f"tokenizer model type {model['type']} is not supported (BPE, Unigram, WordPiece, WordLevel)")
    model_size = len(model["vocab"])

    def added(i, content, **kw):
        return {"id": i, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True, **kw}

    tokens = [added(i, s) for i, s in enumerate(SPECIALS)]
    tokens += [dict(t, id=t["id"] + ID_OFFSET, content=rename(t["content"])) for t in tj.get("added_tokens", [])]
    top = max([model_size - 1] + [t["id"] for t in tokens])
    # dict.txt's padding rows: special tokens, so no text ever maps to them and decoding skips them.
    tokens += [added(i, f"madeupword{j:04d}") for j, i in enumerate(range(top + 1, size))]
    if encoder:  # lstrip like RoBERTa's: "a <mask>" masks the word "▁b" with its leading space
        tokens.append(added(size, MASK, lstrip=True))
    tj["added_tokens"] = sorted(tokens, key=lambda t: t["id"])
    # The preprocessing path encodes without special tokens: keep only offset handling.
    post = tj.get("post_processor") or {}
    kept = [p for p in (post.get("processors", []) if post.get("type") == "Sequence" else [post])
            if p.get("type") == "ByteLevel"]
    tj["post_processor"] = kept[0] if kept else None
    tj["truncation"] = tj["padding"] = None
    tokenizer = Tokenizer.from_str(json.dumps(tj))
    # tokenizers numbers added tokens past the model vocabulary in order; check every id landed.
    names = {t["id"]: t["content"] for t in tj["added_tokens"]}
    for i in range(size + encoder):
        if i in names and tokenizer.token_to_id(names[i]) != i:
            raise InputError(f"the tokenizer's ids are not contiguous (token {names[i]!r} lands on "
                              f"{tokenizer.token_to_id(names[i])}, not {i}); it cannot be exported")
    if encoder:  # what masked_lm fed the model: <s> line </s> (RoBERTa's pair layout for two segments)
        template = processors.TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>",
                                                 special_tokens=[("<s>", 0), ("</s>", 2)])
    elif add_bos:
        template = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 0)])
    else:
        template = None  # language_modeling without add_bos_token: the text as it is
    if template is not None:
        tokenizer.post_processor = (processors.Sequence([tokenizer.post_processor, template])
                                    if tokenizer.post_processor else template)
    return tokenizer, unk


def never_predicted(tokenizer, reference) -> list[int]:
    """Exported ids that stand for no text, which a headless masked LM's e^T scores must never predict: the
    exported tokenizer's special tokens and the tokenizer's unknown and control pieces (its ``special_ids``)."""
    ids = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return sorted(ids | {i + ID_OFFSET for i in reference.special_ids()})


def sample_lines(data: Path, dictionary, reference, limit: int) -> list[str]:
    """Text to compare tokenizers on: decoded lines of the binarized validation split, and SAMPLE_TEXT."""
    from fairseq.data import data_utils
    lines = list(SAMPLE_TEXT)
    dataset = data_utils.load_indexed_dataset(str(data / "valid"), dictionary)
    decode = reference.decode
    for k in range(len(dataset) if dataset is not None else 0):
        ids = [i - ID_OFFSET for i in dataset[k].tolist()[:-1]]  # drop the </s> binarization appended
        if ids:
            lines.append(decode(ids))
        if len(lines) >= limit:
            break
    return lines


def check_tokenizer(hf, reference, lines: list[str], encoder: bool, add_bos: bool) -> tuple[int, int]:
    """HF ids == preprocessing-path ids + 4 (+ the specials the fairseq task adds).
    Lines containing a special token's text are skipped: HF tokenizers read them as specials."""
    specials = {t.content for t in hf.added_tokens_decoder.values() if t.special}
    lines_ok = [line for line in lines if not any(s in line for s in specials)]
    expected = [[i + ID_OFFSET for i in ids] for ids in reference.encode_batch(lines_ok)]
    if encoder:
        expected = [[0] + ids + [2] for ids in expected]
    elif add_bos:
        expected = [[0] + ids for ids in expected]
    got = hf(lines_ok)["input_ids"]
    for line, want, have in zip(lines_ok, expected, got):
        if want != have:
            raise ParityError(f"tokenizer mismatch on {line[:60]!r}: fairseq ids {want[:12]}..., "
                              f"exported tokenizer {have[:12]}...")
    return len(lines_ok), len(lines) - len(lines_ok)
