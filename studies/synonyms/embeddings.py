"""A model's input embedding matrix and its word -> single-token lookup (paper App. A, Fig.8).

A fairseq checkpoint (``.pt``: the matrix from its state dict, words tokenized with its data folder's
tokenizer) or a Hugging Face folder (``AutoTokenizer`` and ``get_input_embeddings()``, offline). A word
counts when the text encoded, the word after a space (``--word-form space``: ``Ġword`` / ``▁word``) or
alone (``bare``), is exactly one id that is no special token and has an embedding row.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from fairseq_headless.checkpoint_reading import cfg_field, read_checkpoint
from fairseq_headless.cli import InputError

WORD_FORMS = ("space", "bare")
# Files a Hugging Face folder's tokenizer is loaded from (fast tokenizer first, then slow ones' vocabularies).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")
# Input embedding matrices in the plugin's and fairseq's models: RoBERTa encoders, transformer_lm
# decoders (GPT-2 shapes), GPT-NeoX decoders (Pythia shapes).
FAIRSEQ_EMBEDDING_KEYS = (
    "encoder.sentence_encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
    "decoder.embed_in.weight",
)

# The lookup's outcome for a word, besides an id.
MULTI_TOKEN = "multi_token"  # zero or several ids
SPECIAL_TOKEN = "special_token"  # one id, but unknown/padding/... or without an embedding row


@dataclass
class EmbeddingModel:
    """What the analysis needs from a model: its input embeddings and how it tokenizes a word."""

    option: str  # the command-line option that named it, for error messages
    path: Path
    kind: str  # "fairseq" or "huggingface"
    description: str
    weight: object  # torch.Tensor (rows, dim)
    encode: Callable[[str], list]  # text -> model ids, no special tokens added
    special_ids: frozenset = field(default_factory=frozenset)

    def token_id(self, word: str, word_form: str = "space"):
        """The word's single model id, else MULTI_TOKEN or SPECIAL_TOKEN."""
        ids = self.encode(" " + word if word_form == "space" else word)
        if len(ids) != 1:
            return MULTI_TOKEN
        token = int(ids[0])
        if token in self.special_ids or not 0 <= token < self.weight.shape[0]:
            return SPECIAL_TOKEN
        return token

    def info(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "type": self.description,
                "embedding_rows": int(self.weight.shape[0]), "embedding_dim": int(self.weight.shape[1])}


# ------------------------------------------------------------------------------------------
# fairseq checkpoints


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def manifest_tokenizer(data: Path, option: str):
    """(encode: text -> fairseq ids, special fairseq ids) of a data folder (or a colon list of its shards)."""
    from fairseq_headless.data.folder import open_data_folder

    try:
        encoder = open_data_folder(data, f"{option}: its data folder {data}").fairseq_encoder()
    except InputError as e:
        raise InputError(f"{e}; pass the folder with {option}-data-bin DIR") from None
    return encoder, encoder.special_ids


def load_fairseq(path: Path, data_bin: Path | None, option: str) -> EmbeddingModel:
    logging.getLogger("fairseq").setLevel(logging.WARNING)
    import fairseq_headless.plugin  # noqa: F401  (registers the plugin's architectures for the checkpoint's cfg)

    state = read_checkpoint(path, option)  # weights_only; fairseq-train's Namespace sections allowed
    cfg, weights = state["cfg"], state["model"]
    key = next((k for k in FAIRSEQ_EMBEDDING_KEYS if k in weights), None)
    if key is None:
        raise InputError(f"{option} {path}: no input embedding matrix among its weights (looked for "
                         f"{', '.join(FAIRSEQ_EMBEDDING_KEYS)})")
    if data_bin is not None:
        data = Path(data_bin)
    else:
        try:
            data = str(cfg_field(cfg_field(cfg, "task"), "data"))  # a folder, or a colon list of shards
        except (KeyError, TypeError):
            raise InputError(f"{option} {path}: its config names no task.data; pass the data folder "
                             f"with {option}-data-bin DIR") from None
    encode, specials = manifest_tokenizer(data, option)
    try:
        arch = cfg_field(cfg_field(cfg, "model"), "_name")
    except (KeyError, TypeError):
        arch = "?"
    return EmbeddingModel(option=option, path=path, kind="fairseq", description=f"fairseq {arch}",
                          weight=weights[key].detach().float(), encode=encode, special_ids=specials)


# ------------------------------------------------------------------------------------------
# Hugging Face folders


def load_huggingface(folder: Path, option: str) -> EmbeddingModel:
    from transformers import AutoModel, AutoTokenizer

    from fairseq_headless.evaluation.model_loading import quiet_transformers

    # Without tokenizer files transformers 5 builds an empty tokenizer of the model type (specials only),
    # which would make every word "not a single token": refuse the folder instead.
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{option} {folder}: no tokenizer in the folder (none of "
                         f"{', '.join(TOKENIZER_FILES)}); export it with scripts/convert_to_hf.py, "
                         "which writes one")
    with quiet_transformers():
        try:
            # trust_remote_code: a headless encoder export's classes are its folder's modeling_headless_roberta.py
            tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise InputError(f"{option} {folder}: no usable tokenizer in the folder ({_first_line(e)}); "
                             "export it with scripts/convert_to_hf.py, which writes one") from None
        try:
            model = AutoModel.from_pretrained(folder, local_files_only=True, trust_remote_code=True)
        except (OSError, ValueError, KeyError) as e:
            raise InputError(f"{option} {folder}: cannot load its model ({_first_line(e)})") from None
    weight = model.get_input_embeddings().weight.detach().float()
    return EmbeddingModel(
        option=option, path=folder, kind="huggingface", description=f"huggingface {model.config.model_type}",
        weight=weight, encode=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        special_ids=frozenset(tokenizer.all_special_ids))


def load_model(path: Path, data_bin: Path | None, option: str) -> EmbeddingModel:
    """A fairseq checkpoint file or a Hugging Face folder, told apart by the path alone."""
    path = Path(path)
    if path.is_file():
        return load_fairseq(path, data_bin, option)
    if path.is_dir() and (path / "config.json").is_file():
        if data_bin is not None:
            raise InputError(f"{option}-data-bin is for fairseq checkpoints; a Hugging Face folder holds "
                             "its own tokenizer")
        return load_huggingface(path, option)
    raise InputError(f"{option} {path}: neither a fairseq checkpoint file nor a Hugging Face folder "
                     "(with a config.json)")
