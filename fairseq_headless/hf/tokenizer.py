"""The data folder's tokenizer as a Hugging Face fast tokenizer whose ids are the tokenizer's own.

Special tokens are the tokenizer's (sentencepiece's ids; in a tokenizer.json, by name); what the task
needs and the tokenizer lacks is appended after its ids: ``</s>``, ``<pad>`` and, for masked LM,
``<mask>`` (as fairseq's masked_lm task appends ``<mask>`` to its dictionary). ``<s>`` falls back to the
end-of-text token (GPT-NeoX's tokenizer has one for both). Masked-LM encodings are ``<s> text </s>``, what
a training sample shows; causal ones the text alone. Before training, the tokenizer is checked against
the folder's preprocessing path on its validation lines, as the export checks its own.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..cli import InputError
from ..data.binarize import ID_OFFSET
from ..data.folder import DataFolder
from .data import Specials, TokenStream

CHECK_LINES = 500
NAMES = {  # tokenizer.json special tokens, by the names tokenizers give them
    "bos": ("<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "[CLS]"),
    "eos": ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "[SEP]"),
    "pad": ("<pad>", "<|padding|>", "<|pad|>", "[PAD]"),
    "mask": ("<mask>", "[MASK]", "<|mask|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
}
APPENDED = {"eos": "</s>", "pad": "<pad>", "mask": "<mask>"}


@dataclasses.dataclass
class FolderTokenizer:
    hf: object  # transformers.PreTrainedTokenizerFast
    specials: Specials
    text_vocab_size: int  # the tokenizer's own ids 0..V-1 (masking's random replacements)
    vocab_size: int  # the model's vocabulary: every id, appended specials included
    reference: object  # the preprocessing path's tokenizer (fairseq_headless.data.tokenizer)
    appended: tuple[str, ...]  # the roles of the tokens appended after the tokenizer's ids


def build_tokenizer(folder: DataFolder, task: str, max_length: int) -> FolderTokenizer:
    from tokenizers import AddedToken, Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    from ..data.tokenizer import SentencePieceTokenizer
    from ..export.tokenizer import raw_tokenizer

    if folder.tokenizer_type not in ("sentencepiece", "hf"):
        raise InputError(f"--data {folder.path}: tokenizer type {folder.tokenizer_type!r}; the Hugging Face engine "
                         f"reads prepare_data.py's folders (sentencepiece or tokenizer.json)")
    reference, raw = raw_tokenizer(folder)
    vocab = raw.get_vocab(with_added_tokens=True)
    names = {role: next((n for n in candidates if n in vocab), None) for role, candidates in NAMES.items()}
    if isinstance(reference, SentencePieceTokenizer):  # its own ids, whatever their pieces are called
        sp = reference.sp
        for role, i in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("pad", sp.pad_id()), ("unk", sp.unk_id())):
            names[role] = sp.id_to_piece(i) if i >= 0 else None
    appended = tuple(role for role in ("eos", "pad") + (("mask",) if task == "mlm" else ()) if names[role] is None)
    for role in appended:
        names[role] = APPENDED[role]
        raw.add_special_tokens([AddedToken(names[role], special=True, normalized=False)])
    names["bos"] = names["bos"] or names["eos"]
    ids = {role: raw.token_to_id(name) if name else None for role, name in names.items()}
    if any(ids[role] < reference.vocab_size for role in appended):  # would shadow one of the folder's ids
        raise InputError(f"{reference.path}: appending {[names[r] for r in appended]} gave ids inside the "
                         f"tokenizer's own 0..{reference.vocab_size - 1}; add these special tokens to the tokenizer")
    # a template of the tokenizer.json (BERT's [CLS] ... [SEP]) would add tokens the preprocessing never did
    tj = json.loads(raw.to_str())
    post = tj.get("post_processor") or {}
    kept = [p for p in (post.get("processors", []) if post.get("type") == "Sequence" else [post])
            if p.get("type") == "ByteLevel"]
    tj["post_processor"], tj["truncation"], tj["padding"] = (kept[0] if kept else None), None, None
    raw = Tokenizer.from_str(json.dumps(tj))
    if task == "mlm":
        bos, eos = names["bos"], names["eos"]
        template = processors.TemplateProcessing(
            single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
            special_tokens=sorted({(bos, ids["bos"]), (eos, ids["eos"])}))
        raw.post_processor = processors.Sequence([raw.post_processor, template]) if raw.post_processor else template
    hf = PreTrainedTokenizerFast(
        tokenizer_object=raw, model_max_length=max_length,
        **{f"{role}_token": name for role, name in names.items() if name is not None})
    specials = Specials(bos=ids["bos"], eos=ids["eos"], pad=ids["pad"], unk=ids["unk"], mask=ids["mask"])
    size = max(raw.get_vocab(with_added_tokens=True).values()) + 1
    return FolderTokenizer(hf, specials, reference.vocab_size, size, reference, appended)


def validation_lines(shard: Path, limit: int = CHECK_LINES) -> list[list[int]]:
    """The first ``limit`` text lines of the folder's validation split (else training split), in tokenizer ids."""
    split = "valid" if (shard / "valid.idx").is_file() else "train"
    stream = TokenStream(shard / split)
    lines, start = [], 0
    for size in stream.sizes:
        size = int(size)
        if size > 1:  # a line's ids and its </s>; a lone </s> is a document boundary
            lines.append((np.asarray(stream.tokens[start:start + size - 1], np.int64) - ID_OFFSET).tolist())
            if len(lines) == limit:
                break
        start += size
    return lines


def check_tokenizer(tokenizer: FolderTokenizer, shard: Path) -> int:
    """The fast tokenizer encodes each decoded line as the preprocessing tokenizer does (which gives the
    folder's ids wherever decoding loses nothing); lines holding a special token's text are skipped, as in
    the export. Returns the number of lines compared."""
    reference, hf = tokenizer.reference, tokenizer.hf
    texts = [reference.decode(ids) for ids in validation_lines(shard)]
    texts = [t for t in texts if not any(s in t for s in hf.all_special_tokens)]
    expected = reference.encode_batch(texts)
    # the backend that the saved tokenizer encodes with (the wrapper would warn about lines past max_length)
    got = [e.ids for e in hf.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
    for text, want, have in zip(texts, expected, got):
        if want != have:
            raise InputError(f"{reference.path}: the rebuilt fast tokenizer differs from the data folder's on "
                             f"{text[:60]!r} ({want[:10]} against {have[:10]}); it cannot be saved with the model")
    return len(texts)
