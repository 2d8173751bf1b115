"""The tokenizers of the data stage: sentencepiece (trained here or given) and Hugging Face
``tokenizer.json`` (e.g. Pythia's, paper Sec. 4.2), behind one batched ``encode_batch``.

A preparation worker is one process running one tokenizer thread (``single_threaded``): the
parallelism is the workers', so that N workers use N cores and no more."""
from __future__ import annotations

import functools
import io
import json
import os
import shutil
from pathlib import Path
from typing import Iterable
from ..cli import InputError


# byte_fallback needs 256 byte pieces on top of the characters, so "auto" turns it on only for
# vocabularies at least this large.
BYTE_FALLBACK_AUTO_MIN_VOCAB = 1000
# sentencepiece silently skips training sentences longer than max_sentence_length (4192 bytes): long
# lines are cut at whitespace into pieces below this for training.
SPM_TRAIN_CHUNK_BYTES = 4000


def single_threaded() -> None:
    """One tokenizer thread in this process (call before the tokenizer first encodes): HF
    tokenizers otherwise start a thread per core in every worker."""
    os.environ["RAYON_NUM_THREADS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


class Tokenizer:
    """What the pipeline needs of a tokenizer: batched encoding to ids, and its file."""

    kind: str  # manifest tokenizer.type
    filename: str  # file name inside DIR/tokenizer/
    path: Path
    vocab_size: int
    model_type: str | None
    trained: bool = False
    option: str  # the command-line option it came from, for messages

    def encode_batch(self, lines: list[str]) -> list[list[int]]:
        raise NotImplementedError

    def special_ids(self) -> set[int]:
        """Tokenizer ids that stand for no text (unknown, control and special added tokens)."""
        return set()

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def running_text(self, ids: list[int]) -> str:
        """The text ``ids`` add inside running text: `` the`` for ``▁the`` or ``Ġthe``.

        ``decode`` reads ids as a whole text, and sentencepiece drops the space before a text's first
        word; a token spliced after other words (fairseq's fill_mask) or tested for starting a word keeps
        it. Decoded after an anchor token, which is then cut off: the same for every kind of tokenizer."""
        anchor = self._anchor
        head, text = self.decode(anchor), self.decode(anchor + list(ids))
        return text[len(head):] if text.startswith(head) else self.decode(ids)

    @functools.cached_property
    def _anchor(self) -> list[int]:
        return self.encode_batch(["a"])[0]

    def save(self, folder: Path) -> None:
        shutil.copyfile(self.path, folder / self.filename)


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"
    filename = "spm.model"

    def __init__(self, model_file: Path, option: str, trained: bool = False):
        import sentencepiece as spm
        from sentencepiece.sentencepiece_model_pb2 import ModelProto, TrainerSpec
        try:
            self.sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (RuntimeError, OSError) as e:
            raise InputError(f"{option} {model_file}: sentencepiece cannot load this model ({e}); pass a "
                            f"sentencepiece .model file") from None
        self.path = Path(model_file)
        self.option = option
        self.vocab_size = self.sp.get_piece_size()
        # The model as sentencepiece holds it (pieces with types and scores, trainer and normalizer
        # specs), read by sentencepiece's own protobuf module: the export rebuilds the tokenizer from it.
        self.proto = ModelProto.FromString(self.sp.serialized_model_proto())
        self.model_type = TrainerSpec.ModelType.Name(self.proto.trainer_spec.model_type).lower()
        self.trained = trained

    def encode_batch(self, lines):
        return self.sp.encode(lines, out_type=int, num_threads=1)

    def special_ids(self):
        return {i for i in range(self.vocab_size) if self.sp.is_unknown(i) or self.sp.is_control(i)}

    def decode(self, ids):
        return self.sp.decode(ids)

    def save(self, folder):
        super().save(folder)
        vocab = self.path.with_suffix(".vocab")
        if self.trained and vocab.exists():  # human-readable piece list, written by training
            shutil.copyfile(vocab, folder / "spm.vocab")


class HFTokenizer(Tokenizer):
    kind = "hf"
    filename = "tokenizer.json"

    def __init__(self, path: Path, option: str = "--hf-tokenizer"):
        try:
            from tokenizers import Tokenizer as _HFTok
        except ImportError:
            raise InputError(f"{option} needs the `tokenizers` library, which is not installed") from None
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{option} {path}: file not found")
        try:
            self.tok = _HFTok.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception on bad JSON/schema
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"{option} {path}: not a valid tokenizer.json ({first})") from None
        self.path = path
        self.option = option
        vocab = self.tok.get_vocab(with_added_tokens=True)
        if not vocab:
            raise InputError(f"{option} {path}: the tokenizer has an empty vocabulary")
        # Ids may have holes (added tokens placed far out); every id below the largest gets a
        # dictionary row so the +4 mapping holds for all of them.
        self.vocab_size = max(vocab.values()) + 1
        try:
            self.model_type = json.loads(path.read_text(encoding="utf-8"))["model"]["type"]
        except (ValueError, KeyError, TypeError):
            self.model_type = None

    def encode_batch(self, lines):
        # No special tokens: fairseq adds its own </s> per line.
        return [e.ids for e in self.tok.encode_batch(lines, add_special_tokens=False)]

    def decode(self, ids):
        return self.tok.decode(ids, skip_special_tokens=False)

    def special_ids(self):
        ids = {i for i, added in self.tok.get_added_tokens_decoder().items() if added.special}
        unk = getattr(self.tok.model, "unk_token", None)
        if unk is not None and self.tok.token_to_id(unk) is not None:
            ids.add(self.tok.token_to_id(unk))
        return ids


class GPT2BPETokenizer(Tokenizer):
    """GPT-2's BPE files (``encoder.json``, ``vocab.bpe``) encoded by fairseq's own GPT-2 encoder,
    as ``examples/roberta/multiprocessing_bpe_encoder.py`` does before fairseq-preprocess: the
    preprocessing path of a folder binarized by fairseq directly (fairseq's RoBERTa recipe)."""

    kind = "gpt2"
    option = "--tokenizer"

    def __init__(self, encoder_json: Path, vocab_bpe: Path):
        from fairseq.data.encoders.gpt2_bpe_utils import get_encoder
        self.path, self.merges = Path(encoder_json), Path(vocab_bpe)
        try:
            self.bpe = get_encoder(str(self.path), str(self.merges))
        except (OSError, ValueError) as e:
            raise InputError(f"--tokenizer {self.path} {self.merges}: not GPT-2 BPE files ({e})") from None
        self.vocab_size = max(self.bpe.encoder.values()) + 1
        self.model_type = "BPE"

    def encode_batch(self, lines):
        return [self.bpe.encode(line) for line in lines]

    def decode(self, ids):
        return self.bpe.decode(ids)

    def special_ids(self):
        # GPT-2's one special token: encoder.json lists it among the ordinary entries, so only its name tells it apart
        return {self.bpe.encoder[t] for t in ("<|endoftext|>",) if t in self.bpe.encoder}

    def to_tokenizers(self):
        """The same tokenizer as a `tokenizers` object: a byte-level BPE (GPT-2's regex and byte map)."""
        from tokenizers import Tokenizer as _HFTok, decoders, models, pre_tokenizers
        tok = _HFTok(models.BPE.from_file(str(self.path), str(self.merges)))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok


def load_tokenizer(kind: str, path, option: str, trained: bool = False) -> Tokenizer:
    """``path``: the file, or for "gpt2" the pair (encoder.json, vocab.bpe)."""
    if kind == "gpt2":
        return GPT2BPETokenizer(*path)
    if kind == "sentencepiece":
        if not Path(path).is_file():
            raise InputError(f"{option} {path}: file not found")
        return SentencePieceTokenizer(path, option, trained=trained)
    return HFTokenizer(path, option)


# -- sentencepiece training --


def training_pieces(line: str) -> list[str]:
    """A line cut at whitespace into pieces sentencepiece will not skip."""
    if len(line.encode("utf-8")) <= SPM_TRAIN_CHUNK_BYTES:
        return [line]
    pieces, piece, size = [], [], 0
    for word in line.split():
        n = len(word.encode("utf-8")) + 1
        if piece and size + n > SPM_TRAIN_CHUNK_BYTES:
            pieces.append(" ".join(piece))
            piece, size = [], 0
        piece.append(word)
        size += n
    if piece:
        pieces.append(" ".join(piece))
    return pieces


def train_sentencepiece(sample: Iterable[str], folder: Path, vocab_size: int, model_type: str,
                        character_coverage: float, byte_fallback: bool, threads: int) -> SentencePieceTokenizer:
    """Train on the given sample (the training split's reservoir, sampling.py) into folder/spm.model."""
    import sentencepiece as spm
    prefix = Path(folder) / "spm"
    # The model is handed over in memory: written from a model_prefix, it would record that path (with the
    # run's temporary folder, so its process id) and differ from run to run.
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sample), model_writer=model,
            vocab_size=vocab_size, model_type=model_type, character_coverage=character_coverage,
            # Without byte fallback, characters outside the coverage become <unk> (on the SOTU
            # corpus at 0.9995: "?", "(", "V", "K", ...).
            byte_fallback=byte_fallback,
            # A small corpus may not support the requested size; take what it supports instead of
            # failing (the manifest has the real size).
            hard_vocab_limit=False,
            num_threads=threads,
            # Silence the trainer's C++ log (thousands of lines on stderr); failures still arrive
            # as exceptions.
            minloglevel=2)
    except RuntimeError as e:
        hint = ("raise --vocab-size or use --byte-fallback off" if byte_fallback
                else "try another --vocab-size or --character-coverage")
        raise InputError(f"--vocab-size {vocab_size}: sentencepiece training failed "
                        f"({str(e).splitlines()[0]}); {hint}") from None
    prefix.with_suffix(".model").write_bytes(model.getvalue())
    trained = spm.SentencePieceProcessor(model_proto=model.getvalue())
    # the piece list training writes beside a model_prefix, in its format (C++'s default float output is %g)
    prefix.with_suffix(".vocab").write_text(
        "".join(f"{trained.id_to_piece(i)}\t{trained.get_score(i):g}\n" for i in range(trained.get_piece_size())),
        encoding="utf-8")
    return SentencePieceTokenizer(prefix.with_suffix(".model"), "--vocab-size", trained=True)
