"""fairseq's own tools on the project's checkpoints through the ``data_folder`` BPE (fairseq_headless/data_folder_bpe.py):
the hub interface's encode/decode, fill_mask and sample, fairseq-interactive, whole-word masking's word starts.

Every check runs on checkpoints written by both fairseq CLIs: ``fairseq-hydra-train`` (a sentencepiece data folder)
and ``fairseq-train`` (argparse; a tokenizer.json data folder in two shards, trained on the colon list); the decoders'
checks also on the headless Pythia (its own GPT-NeoX decoder, hydra). Expected
values come from the data folder's own tokenizer (the preprocessing path), from fairseq's own BPEs (word starts) and
from the model's hidden states scored by hand with e^T.
"""
from __future__ import annotations

import subprocess

import pytest
import torch

from conftest import BIN, REPO, assert_close_computations, network_terms, rounding_bound, run_cli
from fairseq_headless.data.folder import open_data_folder
from helpers.export import MULTILINGUAL, byte_level_tokenizer, corpus_lines, prepare
from fairseq_headless.cli import InputError

CASES = [("encoder", "hydra"), ("encoder", "argparse"), ("decoder", "hydra"), ("decoder", "argparse"), ("pythia", "hydra")]
HYDRA = {"encoder": "hmlm_tiny", "decoder": "hlm_tiny", "pythia": "hlm_pythia_tiny"}
ARGPARSE = {
    "encoder": ["--task", "masked_lm", "--criterion", "headless_masked_lm", "--arch", "headless_roberta_tiny",
                "--required-batch-size-multiple", "1"],
    "decoder": ["--task", "language_modeling", "--criterion", "headless_language_modeling", "--arch", "headless_gpt2_tiny"],
}
PROMPT = "The State of the"
MASKED = "The State of the <mask> address."


@pytest.fixture(scope="module")
def folders(spm_folder, tmp_path_factory):
    """kind -> task.data: a sentencepiece folder, and a tokenizer.json folder prepared in two shards (a colon list)."""
    root = tmp_path_factory.mktemp("hf")
    hf = prepare(root, "--hf-tokenizer", byte_level_tokenizer(root / "tokenizer.json"), "--shards", "2")
    return {"sentencepiece": str(spm_folder), "tokenizer.json": f"{hf / 'shard0'}:{hf / 'shard1'}"}


def data_of(folders, cli: str) -> str:
    return folders["sentencepiece" if cli == "hydra" else "tokenizer.json"]


@pytest.fixture(scope="module")
def checkpoints(folders, tmp_path_factory):
    """(model kind, cli) -> checkpoint_last.pt of 3 updates, saved by that CLI."""
    saved = {}
    for kind, cli in CASES:
        save_dir = tmp_path_factory.mktemp(f"{kind}_{cli}")
        data = data_of(folders, cli)
        if cli == "hydra":
            run_cli(["fairseq-hydra-train", "--config-dir", REPO / "configs", "--config-name", HYDRA[kind],
                     f"task.data={data}", f"checkpoint.save_dir={save_dir}", "optimization.max_update=3",
                     "dataset.disable_validation=true", "checkpoint.save_interval_updates=0"])
        else:
            run_cli(["fairseq-train", data, "--user-dir", REPO / "fairseq_headless", *ARGPARSE[kind],
                     "--tokens-per-sample", "128", "--sample-break-mode", "none", "--optimizer", "adam", "--lr", "1e-3",
                     "--batch-size", "16", "--max-update", "3", "--disable-validation", "--num-workers", "0",
                     "--save-dir", save_dir])
        saved[kind, cli] = save_dir / "checkpoint_last.pt"
    return saved


@pytest.fixture(scope="module")
def hubs(checkpoints, folders):
    """(model kind, cli) -> fairseq's hub interface, loaded as a user would (data_name_or_path: the first shard)."""
    import fairseq_headless.plugin  # noqa: F401  (registers the BPE, as --user-dir does)
    from fairseq.models.roberta import RobertaModel
    from fairseq.models.transformer_lm import TransformerLanguageModel

    loaded = {}
    for (kind, cli), path in checkpoints.items():
        loader = RobertaModel if kind == "encoder" else TransformerLanguageModel
        loaded[kind, cli] = loader.from_pretrained(str(path.parent), checkpoint_file=path.name,
                                                   data_name_or_path=data_of(folders, cli).split(":")[0],
                                                   bpe="data_folder")
    return loaded


def tokenizer_of(folders, cli):
    return open_data_folder(data_of(folders, cli), "test").load_tokenizer()


def texts() -> list[str]:
    english = [line for line in corpus_lines()[:200] if len(line) > 20][::10]
    return english + MULTILINGUAL


# --------------------------------------------------------------------------
# encode / decode
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids="-".join)
def test_hub_encode_gives_the_preprocessing_ids_and_decode_the_tokenizers_own_round_trip(case, hubs, folders):
    hub, tokenizer = hubs[case], tokenizer_of(folders, case[1])
    preprocess = open_data_folder(data_of(folders, case[1]), "test").fairseq_encoder()
    eos, bos = hub.task.source_dictionary.eos(), hub.task.source_dictionary.bos()
    for text in texts():
        ids = hub.encode(text).tolist()
        expected = preprocess(text)
        assert ids == ([bos] if case[0] == "encoder" else []) + expected + [eos], text
        assert hub.task.source_dictionary.unk() not in ids
        assert hub.decode(torch.tensor(ids)) == tokenizer.decode([i - 4 for i in expected]), text


def test_a_colon_list_of_shards_reads_the_first_shards_tokenizer(folders):
    from fairseq.data import encoders
    from omegaconf import OmegaConf

    shards = folders["tokenizer.json"]
    bpe = encoders.build_bpe(OmegaConf.create({"_name": "data_folder", "data_folder": shards}))
    tokenizer = tokenizer_of(folders, "argparse")
    for text in MULTILINGUAL:
        assert bpe.encode(text) == " ".join(map(str, tokenizer.encode_batch([text])[0]))


def test_a_folder_without_manifest_is_one_error_naming_the_option(tmp_path):
    from fairseq.data import encoders
    from omegaconf import OmegaConf

    import fairseq_headless.plugin  # noqa: F401

    with pytest.raises(InputError) as error:
        encoders.build_bpe(OmegaConf.create({"_name": "data_folder", "data_folder": str(tmp_path)}))
    message = str(error.value)
    assert message.startswith(f"bpe.data_folder (default: task.data): no manifest.json in {tmp_path};") and "\n" not in message
    assert "bpe=gpt2" in message  # what a folder of fairseq's own GPT-2 recipe takes instead


def test_fairseqs_own_gpt2_bpe_gives_a_plain_gpt2_folder_its_preprocessing_ids(tmp_path):
    """The README's and the error's advice for folders binarized by fairseq-preprocess (docs/data.md's recipe)."""
    from fairseq.data import Dictionary, encoders
    from helpers.plain_folder import plain_fairseq_folder
    from omegaconf import OmegaConf

    data, encoder_json, vocab_bpe = plain_fairseq_folder(tmp_path)
    bpe = encoders.build_bpe(OmegaConf.create({"_name": "gpt2", "gpt2_encoder_json": str(encoder_json),
                                               "gpt2_vocab_bpe": str(vocab_bpe)}))
    dictionary = Dictionary.load(str(data / "dict.txt"))
    preprocess = open_data_folder(data, "test", tokenizer=(encoder_json, vocab_bpe)).fairseq_encoder()
    for text in ["The of and to in a is that.", "He was not there, she said."]:
        ids = dictionary.encode_line(bpe.encode(text), append_eos=False, add_if_not_exist=False).tolist()
        assert ids == preprocess(text) and dictionary.unk() not in ids


# --------------------------------------------------------------------------
# word starts: one id alone, whole-word masking
# --------------------------------------------------------------------------


def data_folder_bpe(data):
    from fairseq.data import encoders
    from omegaconf import OmegaConf

    import fairseq_headless.plugin  # noqa: F401

    return encoders.build_bpe(OmegaConf.create({"_name": "data_folder", "data_folder": data}))


def test_one_id_decodes_as_inside_running_text(folders):
    spm = data_folder_bpe(folders["sentencepiece"])
    sp = spm.tokenizer.sp
    the, ing = sp.piece_to_id("\u2581the"), sp.piece_to_id("ing")
    assert sp.decode([the]) == "the"  # what a plain decode gives: no space to splice after a word
    assert spm.decode(spm.encode("the")) == " the"  # the price (README): a one-token text keeps the space too
    assert (spm.decode(str(the)), spm.decode(str(ing))) == (" the", "ing")
    assert [spm.is_beginning_of_word(str(i)) for i in (the, ing)] == [True, False]
    # symbols that are no id stand for themselves, as in fairseq's GPT-2 BPE
    assert spm.decode(f"{the} {ing} <mask> {the} madeupword0001") == "theing<mask> themadeupword0001"
    hf = data_folder_bpe(folders["tokenizer.json"])
    the, ing = hf.tokenizer.tok.token_to_id("\u0120the"), hf.tokenizer.tok.token_to_id("ing")
    assert (hf.decode(str(the)), hf.decode(str(ing))) == (" the", "ing")
    assert [hf.is_beginning_of_word(str(i)) for i in (the, ing)] == [True, False]


def whole_word_mask(data):
    from fairseq.data import Dictionary, encoders
    from fairseq.data.encoders.utils import get_whole_word_mask
    from omegaconf import OmegaConf

    import fairseq_headless.plugin  # noqa: F401

    dictionary = Dictionary.load(str(open_data_folder(data, "test").dictionary))
    dictionary.add_symbol("<mask>")  # as the masked_lm task does
    cfg = OmegaConf.create({"_name": "data_folder", "data_folder": data})
    assert encoders.build_bpe(cfg) is not None
    return dictionary, get_whole_word_mask(cfg, dictionary).bool().tolist()


def test_whole_word_mask_starts_words_where_fairseqs_sentencepiece_bpe_does(folders):
    from fairseq.data.encoders.sentencepiece_bpe import SentencepieceBPE, SentencepieceConfig

    data = folders["sentencepiece"]
    dictionary, starts = whole_word_mask(data)
    sp = data_folder_bpe(data).tokenizer.sp
    fairseqs = SentencepieceBPE(SentencepieceConfig(sentencepiece_model=str(open_data_folder(data, "t").tokenizer[0])))
    pieces = [i for i in range(sp.get_piece_size()) if not sp.is_byte(i)]  # fairseq's reads <0x20> as no word start
    assert [starts[i + 4] for i in pieces] == [fairseqs.is_beginning_of_word(sp.id_to_piece(i)) or sp.is_control(i)
                                               or sp.is_unknown(i) for i in pieces]
    assert sum(starts[i + 4] for i in pieces) > 100  # words, and pieces that continue them
    assert len(starts) == len(dictionary) and all(starts[:4]) and starts[-1]  # specials, <mask>
    assert all(starts[dictionary.index(s)] for s in dictionary.symbols if s.startswith("madeupword"))


def test_whole_word_mask_starts_words_at_byte_level_spaces(folders):
    data = folders["tokenizer.json"]
    dictionary, starts = whole_word_mask(data)
    tok = data_folder_bpe(data).tokenizer.tok
    vocab = tok.get_vocab(with_added_tokens=True)
    specials = {vocab["<|endoftext|>"], vocab["<|padding|>"]}
    expected = {i: token.startswith("\u0120") or i in specials for token, i in vocab.items()}
    assert [starts[i + 4] for i in sorted(expected)] == [expected[i] for i in sorted(expected)]
    assert 50 < sum(expected.values()) < len(expected) - 50


# --------------------------------------------------------------------------
# fill_mask (encoders): e^T scores, words with their leading space
# --------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES[:2], ids="-".join)
def test_fill_mask_ranks_by_e_transpose_and_returns_words_with_their_leading_space(case, hubs, folders):
    hub, tokenizer = hubs[case], tokenizer_of(folders, case[1])
    model, dictionary = hub.model.eval(), hub.task.source_dictionary
    assert not [name for name, _ in model.named_parameters() if "lm_head" in name]  # headless: no head to load
    k = 40  # after 3 updates words are still outranked by pieces and characters
    filled = hub.fill_mask(MASKED, topk=k)

    before, after = MASKED.split("<mask>")
    tokens = dictionary.encode_line(f"<s> {hub.bpe.encode(before.rstrip())} <mask> {hub.bpe.encode(after.rstrip())} </s>",
                                    append_eos=False, add_if_not_exist=False).long()
    with torch.no_grad():
        features = model(tokens[None], features_only=True)[0][0, tokens.eq(hub.task.mask_idx)][0]
        probs = (features.double() @ model.input_embeddings().weight.double().T).softmax(-1)
    top = probs.topk(k)
    # fairseq's dictionary.string drops <s> and </s> from the words, not from the scores: the two agree up to the first
    ids = top.indices.tolist()
    dropped = {dictionary.bos(), dictionary.eos()}
    words = [tokenizer.running_text([int(dictionary[i])]) if dictionary[i].isdigit() else dictionary[i]
             for i in ids if i not in dropped]
    assert [word for _, _, word in filled] == words
    assert [sentence for sentence, _, _ in filled] == [MASKED.replace(" <mask>", word) for word in words]
    paired = next((n for n, i in enumerate(ids) if i in dropped), k)
    assert paired >= 5, ids
    assert_close_computations(torch.tensor([score for _, score, _ in filled][:paired]), top.values[:paired],
                              terms=features.numel() + len(probs), scale=1.0)
    assert any(word.startswith(" ") and word[1:2].isalpha() for word in words), filled  # a word, after its space


# --------------------------------------------------------------------------
# decoders: sample(), fairseq-interactive
# --------------------------------------------------------------------------


def assert_greedy_e_transpose(model, tokens: list[int], prompt_length: int, eos: int, pad: int):
    """Each generated token is the argmax of e^T over the model's hidden state at the step before it (beam 1),
    up to rounding: the whole sequence recomputed at once against the generator's incremental steps."""
    context = torch.tensor([[eos, *tokens]])
    with torch.no_grad():
        features = model(context, features_only=True)[0][0].double()
        logits = features @ model.input_embeddings().weight.double().T
    logits[:, pad] = float("-inf")  # the generator never emits padding
    bound = rounding_bound(network_terms(model, context.size(1)) + features.size(-1),
                           logits[torch.isfinite(logits)].abs().max())
    generated = range(prompt_length, len(tokens))
    assert len(generated) >= 3
    for j in generated:
        assert logits[j, tokens[j]] >= logits[j].max() - bound, (j, tokens[j], logits[j].argmax().item())


@pytest.mark.parametrize("case", CASES[2:], ids="-".join)
def test_sample_generates_text_greedily_with_e_transpose(case, hubs, folders):
    hub, tokenizer = hubs[case], tokenizer_of(folders, case[1])
    dictionary = hub.task.source_dictionary
    prompt = hub.encode(PROMPT)[:-1].tolist()  # without the </s> binarization appends
    hypothesis = hub.generate([hub.encode(PROMPT)], beam=1, max_len_b=12)[0][0]["tokens"].tolist()
    assert hypothesis[:len(prompt)] == prompt
    tokens = hypothesis[:-1] if hypothesis[-1] == dictionary.eos() else hypothesis
    assert_greedy_e_transpose(hub.models[0], tokens, len(prompt), dictionary.eos(), dictionary.pad())
    text = hub.sample(PROMPT, beam=1, max_len_b=12)
    assert text == tokenizer.decode([i - 4 for i in tokens]) and text.startswith(PROMPT)


@pytest.mark.parametrize("case", CASES[2:], ids="-".join)
def test_fairseq_interactive_generates_with_the_data_folder_bpe(case, checkpoints, hubs, folders):
    data = data_of(folders, case[1])  # the argparse case: the colon list of shards
    proc = subprocess.run(
        [str(BIN / "fairseq-interactive"), data, "--path", str(checkpoints[case]), "--user-dir", str(REPO / "fairseq_headless"),
         "--task", "language_modeling", "--bpe", "data_folder", "--beam", "1", "--max-len-b", "12"],
        input=PROMPT + "\n", capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = dict(line.split("\t", 1) for line in proc.stdout.splitlines() if "\t" in line)
    hypothesis = [int(s) + 4 for s in lines["H-0"].split("\t")[1].split()]
    text = lines["D-0"].split("\t")[1]
    hub, tokenizer = hubs[case], tokenizer_of(folders, case[1])
    prompt = hub.encode(PROMPT)[:-1].tolist()
    assert hypothesis[:len(prompt)] == prompt and text.startswith(PROMPT)
    assert text == tokenizer.decode([i - 4 for i in hypothesis])
    dictionary = hub.task.source_dictionary
    assert_greedy_e_transpose(hub.models[0], hypothesis, len(prompt), dictionary.eos(), dictionary.pad())
