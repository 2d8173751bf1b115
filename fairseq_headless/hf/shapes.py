"""The Hugging Face engine's built-in shapes as transformers configs, and ``--model`` resolved to a model.

The paper's shapes (App. D) read their sizes from :data:`fairseq_headless.models.shapes.SHAPES`, so both
engines train the same ones; the modern ones are the published models' configs. The data folder's
tokenizer sets the vocabulary: a fresh model is built with it, a saved one must already have it. A
headless model's head is the input embedding matrix, e^T: tied where the architecture ties it (then
there is no separate head to train or keep), otherwise set to e before every save
(:func:`head_from_embeddings`).
"""
from __future__ import annotations

from pathlib import Path

from ..cli import InputError
from ..models.shapes import SHAPES as PAPER
from .tokenizer import FolderTokenizer

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
DEFAULT_TOKENS_PER_SAMPLE = {"mlm": 128, "clm": 2048}  # the paper's sequence lengths (Tabs. 7-11)


def _paper(name: str) -> dict:
    shape = PAPER[name]
    return dict(num_hidden_layers=shape.layers, hidden_size=shape.dim, num_attention_heads=shape.heads,
                intermediate_size=shape.ffn)


def shape_config(name: str):
    """A fresh config of built-in shape ``name`` (its vocabulary is the original model's)."""
    from transformers import BertConfig, GPTNeoXConfig, LlamaConfig, ModernBertConfig

    shapes = {
        "bert_small": lambda: BertConfig(**_paper("roberta_small")),
        "bert_base": lambda: BertConfig(**_paper("roberta_base")),
        "pythia_70m": lambda: GPTNeoXConfig(  # EleutherAI/pythia-70m-deduped's config.json
            **_paper("pythia_70m"), vocab_size=50304, rotary_pct=0.25, rotary_emb_base=10000,
            max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False),
        "modernbert_base": ModernBertConfig,  # its defaults are ModernBERT-base: 22 x 768, GeGLU 1152, V 50,368
        "smollm2_135m": lambda: LlamaConfig(
            num_hidden_layers=30, hidden_size=576, num_attention_heads=9, num_key_value_heads=3,
            intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=8192,
            rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 100000.0}),
        "llama32_1b": lambda: LlamaConfig(
            num_hidden_layers=16, hidden_size=2048, num_attention_heads=32, num_key_value_heads=8, head_dim=64,
            intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072,
            rms_norm_eps=1e-5, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 8192}),
    }
    return shapes[name]()


BUILT_IN = ("bert_small", "bert_base", "pythia_70m", "modernbert_base", "smollm2_135m", "llama32_1b")


def read_model_option(model: str):
    """``--model`` -> (config, saved folder or None)."""
    from transformers import AutoConfig

    if model in BUILT_IN:
        return shape_config(model), None
    path = Path(model)
    config_file = path / "config.json" if path.is_dir() else path
    if not config_file.is_file():
        raise InputError(f"--model {model}: not a built-in shape ({', '.join(BUILT_IN)}), nor a config.json, nor a "
                         f"folder holding one")
    try:
        config = AutoConfig.from_pretrained(str(config_file if path.is_file() else path), local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise InputError(f"--model {config_file}: not a transformers config ({str(err).splitlines()[0]})") from None
    saved = path.is_dir() and any((path / name).is_file() for name in WEIGHTS)
    return config, (path if saved else None)


def check_task(config, task: str, where: str) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_FOR_MASKED_LM_MAPPING

    kind, masked, causal = config.model_type, type(config) in MODEL_FOR_MASKED_LM_MAPPING, \
        type(config) in MODEL_FOR_CAUSAL_LM_MAPPING  # registered architectures included
    if task == "mlm" and not masked:
        raise InputError(f"--task mlm: {where} is a {kind} model, which has no masked-LM class "
                         f"(AutoModelForMaskedLM); give --task clm or an encoder")
    if task == "clm" and not causal:
        raise InputError(f"--task clm: {where} is a {kind} model, which has no causal-LM class "
                         f"(AutoModelForCausalLM); give --task mlm or a decoder")
    if task == "clm" and masked and not getattr(config, "is_decoder", False):
        raise InputError(f"--task clm: {where} is a {kind} encoder; give --task mlm, or a decoder "
                         f"(a config with \"is_decoder\": true where the architecture allows it)")


def input_embeddings(model, where: str):
    try:
        embedding = model.get_input_embeddings()
    except NotImplementedError:
        embedding = None
    if getattr(embedding, "weight", None) is None or embedding.weight.dim() != 2:
        raise InputError(f"--model {where}: {type(model).__name__} has no input embedding matrix "
                         f"(get_input_embeddings), which sets the vocabulary and is the headless loss's targets")
    return embedding


def is_tied(model) -> bool:
    head = model.get_output_embeddings()
    return head is not None and head.weight is model.get_input_embeddings().weight


def head_from_embeddings(model) -> None:
    """The output head, a parameter of its own, set to e (and its bias to 0): e^T scores, untied."""
    import torch

    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    model.config.get_text_config().tie_word_embeddings = False
    if is_tied(model):
        head.weight = torch.nn.Parameter(embedding.weight.detach().clone())
    else:
        with torch.no_grad():
            head.weight.copy_(embedding.weight)
    if getattr(head, "bias", None) is not None:
        with torch.no_grad():
            head.bias.zero_()
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)


def build_model(model_option: str, task: str, objective: str, tokenizer: FolderTokenizer, untie_head: bool = False):
    """The model ``--model`` names, for ``task``, with the tokenizer's vocabulary and special ids."""
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    auto = AutoModelForMaskedLM if task == "mlm" else AutoModelForCausalLM
    config, saved = read_model_option(model_option)
    check_task(config, task, model_option)
    text = config.get_text_config()
    if saved is not None:
        rows = getattr(text, "vocab_size", None)  # read before the weights load: the error comes first
        if rows != tokenizer.vocab_size:
            lacks_mask = "mask" in tokenizer.appended and rows == tokenizer.vocab_size - 1
            hint = (" (--task mlm appends <mask>, which the data folder's tokenizer lacks: this model was not "
                    "trained for masked LM)" if lacks_mask else "")
            raise InputError(f"--model {model_option}: its vocabulary has {rows} entries but the data folder's "
                             f"tokenizer (with the task's special tokens) has {tokenizer.vocab_size}{hint}; "
                             f"continue it on the data it was trained on")
        model = auto.from_pretrained(str(saved), local_files_only=True)
    else:
        specials = tokenizer.specials
        text.vocab_size = tokenizer.vocab_size
        text.pad_token_id, text.bos_token_id, text.eos_token_id = specials.pad, specials.bos, specials.eos
        for name, value in (("cls_token_id", specials.bos), ("sep_token_id", specials.eos)):  # ModernBERT's
            if hasattr(text, name):
                setattr(text, name, value)
        if objective == "headless":  # the head is e: one matrix, nothing separate to train
            text.tie_word_embeddings = True
        model = auto.from_config(config)
        input_embeddings(model, model_option)
        if objective == "headless" and not is_tied(model):
            text.tie_word_embeddings = False  # the architecture does not tie: the head is set to e when saved
    embedding = input_embeddings(model, model_option)
    width = getattr(text, "hidden_size", embedding.weight.size(1))
    if objective == "headless" and width != embedding.weight.size(1):
        raise InputError(f"--model {model_option}: hidden size {width} differs from the input embeddings' "
                         f"{embedding.weight.size(1)}, so the headless loss cannot score hidden states against them")
    if untie_head:
        if model.get_output_embeddings() is None:
            raise InputError(f"--untie_head: {type(model).__name__} has no output head")
        head_from_embeddings(model)
    return model
