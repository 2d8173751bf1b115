"""fairseq_headless/data/tokenizer.py: the sentencepiece ModelProto that the manifest's model type and the
export's rebuilt tokenizer are read from says what sentencepiece's own processor does with the model."""
from __future__ import annotations

import pytest

from fairseq_headless.data.tokenizer import SentencePieceTokenizer
from helpers.export import corpus_lines


@pytest.mark.parametrize("options", [
    dict(model_type="bpe", byte_fallback=True, user_defined_symbols=["<sep>", "[X]"], control_symbols=["<ctl>"]),
    dict(model_type="unigram", add_dummy_prefix=False, remove_extra_whitespaces=False,
         normalization_rule_name="identity", unk_id=3, bos_id=0, eos_id=1, pad_id=2, unk_piece="[UNK]"),
    dict(model_type="word", treat_whitespace_as_suffix=True),
    dict(model_type="char", bos_id=-1, eos_id=-1),
])
def test_sentencepiece_model_proto_agrees_with_the_processor(tmp_path, options):
    import sentencepiece as spm

    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus_lines()) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(input=str(text), model_prefix=str(tmp_path / "m"), vocab_size=600,
                                   hard_vocab_limit=False, minloglevel=2, **options)
    tokenizer = SentencePieceTokenizer(tmp_path / "m.model", "--spm-model")
    sp, proto = tokenizer.sp, tokenizer.proto
    pieces, trainer, spec = proto.pieces, proto.trainer_spec, proto.normalizer_spec
    kinds = proto.SentencePiece
    assert tokenizer.model_type == options["model_type"]
    assert len(pieces) == tokenizer.vocab_size == sp.get_piece_size() > 100

    # every piece: its text, its score (the same stored float32) and its type
    assert [p.piece for p in pieces] == [sp.id_to_piece(i) for i in range(len(pieces))]
    assert [p.score for p in pieces] == [sp.get_score(i) for i in range(len(pieces))]
    for kind, is_kind in ((kinds.UNKNOWN, sp.is_unknown), (kinds.CONTROL, sp.is_control),
                          (kinds.BYTE, sp.is_byte), (kinds.UNUSED, sp.is_unused)):
        assert [p.type == kind for p in pieces] == [is_kind(i) for i in range(len(pieces))], kind
    assert {i for i, p in enumerate(pieces) if p.type in (kinds.UNKNOWN, kinds.CONTROL)} == tokenizer.special_ids()
    assert [p.piece for p in pieces if p.type == kinds.USER_DEFINED] == options.get("user_defined_symbols", [])
    assert trainer.unk_id == sp.unk_id() and trainer.unk_piece == sp.id_to_piece(sp.unk_id())
    bytes_ = [p.piece for p in pieces if p.type == kinds.BYTE]
    assert trainer.byte_fallback == options.get("byte_fallback", False) == bool(bytes_)
    assert bytes_ == ([f"<0x{b:02X}>" for b in range(256)] if bytes_ else [])
    if bytes_:  # a character outside the pieces (a private-use one) falls back to its UTF-8 bytes
        assert [p for p in sp.encode("\ue000", out_type=str) if p in bytes_] == ["<0xEE>", "<0x80>", "<0x80>"]

    # the normalizer spec's switches, as sentencepiece's own normalization applies them
    suffix = trainer.treat_whitespace_as_suffix
    assert suffix == options.get("treat_whitespace_as_suffix", False)
    expected = "  a  b "
    if spec.remove_extra_whitespaces:
        expected = " ".join(expected.split())
    if spec.add_dummy_prefix:
        expected = expected + " " if suffix else " " + expected
    if spec.escape_whitespaces:
        expected = expected.replace(" ", "\u2581")
    assert sp.normalize("  a  b ") == expected
    assert bool(spec.precompiled_charsmap) == (sp.normalize("ＡＢ①").strip("\u2581") == "AB1")
    assert (spec.add_dummy_prefix, spec.remove_extra_whitespaces, spec.escape_whitespaces) == tuple(
        options.get(k, True) for k in ("add_dummy_prefix", "remove_extra_whitespaces", "escape_whitespaces"))
