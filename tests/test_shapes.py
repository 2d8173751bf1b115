"""fairseq_headless/models/shapes.py: what the plugin registers from the shape table.

The names are pinned: configs, checkpoints (``cfg.model._name``) and docs use them, so a change to the
table or to a family's registration loop must not add, drop or move one unnoticed. The shapes
themselves are checked against the paper (App. D) in tests/test_configs.py."""

import argparse
import dataclasses
import importlib
import json
import subprocess
import sys

import pytest

import fairseq_headless.plugin  # noqa: F401  (registers the plugin)
from fairseq import models

from fairseq_headless.models import shapes

# Every model and architecture that fairseq's registries hold because of the plugin, as registered
# before the shape table existed (each dataclass model is also an architecture of its own name).
PLUGIN_MODELS = [
    "gpt2_quarter", "gpt2_quarter_untied", "gpt2_tiny", "gpt2_tiny_untied",
    "headless_gpt2_quarter", "headless_gpt2_tiny", "headless_pythia_70m", "headless_pythia_tiny",
    "headless_roberta", "headless_transformer_lm", "pythia_70m", "pythia_tiny",
]
PLUGIN_ARCHITECTURES = {  # architecture -> the model it is set on
    **{name: name for name in PLUGIN_MODELS},
    "headless_roberta_base": "headless_roberta", "headless_roberta_multilingual": "headless_roberta",
    "headless_roberta_small": "headless_roberta", "headless_roberta_tiny": "headless_roberta",
    "roberta_multilingual": "roberta", "roberta_small": "roberta", "roberta_tiny": "roberta",
}


@pytest.fixture(scope="module")
def fairseq_own():
    """(models, architectures) that fairseq registers without the plugin, read in a fresh interpreter."""
    code = ("import json, fairseq.models as m; "
            "print(json.dumps([sorted(m.MODEL_REGISTRY), sorted(m.ARCH_MODEL_REGISTRY)]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    own_models, own_archs = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "roberta_base" in own_archs and "transformer_lm" in own_models  # the read worked
    return set(own_models), set(own_archs)


def test_the_plugin_registers_exactly_the_pinned_names(fairseq_own):
    own_models, own_archs = fairseq_own
    assert sorted(set(models.MODEL_REGISTRY) - own_models) == PLUGIN_MODELS
    added = set(models.ARCH_MODEL_REGISTRY) - own_archs
    assert {arch: models.ARCH_MODEL_NAME_REGISTRY[arch] for arch in added} == PLUGIN_ARCHITECTURES


def family_class(family):
    module, name = shapes.FAMILIES[family].fairseq_model.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("shape", shapes.SHAPES.values(), ids=list(shapes.SHAPES))
def test_each_entry_registers_its_twins_on_its_familys_model_alone(shape):
    """What the exporter relies on: every model of an entry is an instance of its family's class and of no
    other family's; the untied twin exists exactly where the vanilla head is tied (GPT-2)."""
    names = [shape.name, shape.headless] + ([shape.untied] if shape.untied else [])
    for name in names:
        matching = [f for f in shapes.FAMILIES if issubclass(models.ARCH_MODEL_REGISTRY[name], family_class(f))]
        assert matching == [shape.family], name
    assert hasattr(models.ARCH_MODEL_REGISTRY[shape.headless], "input_embeddings")  # the CWT criterions' contract
    assert (shape.untied is not None) == (shape.family == "gpt2")


@pytest.mark.parametrize("shape", shapes.of_family("roberta"), ids=lambda s: s.name)
def test_roberta_twins_give_the_same_arguments(shape):
    """A headless encoder and its vanilla twin differ only in the model; for roberta_base the vanilla twin
    is fairseq's own architecture, which must have the table's shape."""
    vanilla, headless = argparse.Namespace(), argparse.Namespace()
    models.ARCH_CONFIG_REGISTRY[shape.name](vanilla)
    models.ARCH_CONFIG_REGISTRY[shape.headless](headless)
    assert vars(vanilla) == vars(headless)
    assert (vanilla.encoder_layers, vanilla.encoder_embed_dim, vanilla.encoder_attention_heads,
            vanilla.encoder_ffn_embed_dim) == (shape.layers, shape.dim, shape.heads, shape.ffn)
    for key, value in shape.defaults.items():
        assert getattr(vanilla, key) == value


def config_of(name):
    return dataclasses.asdict(models.MODEL_DATACLASS_REGISTRY[name]())


@pytest.mark.parametrize("shape", [s for s in shapes.SHAPES.values() if s.family != "roberta"], ids=lambda s: s.name)
def test_dataclass_twins_have_the_tables_shape_and_differ_only_where_they_should(shape):
    vanilla, headless = config_of(shape.name), config_of(shape.headless)
    assert (vanilla["decoder_layers"], vanilla["decoder_embed_dim"], vanilla["decoder_attention_heads"],
            vanilla["decoder_ffn_embed_dim"]) == (shape.layers, shape.dim, shape.heads, shape.ffn)
    assert {key: vanilla[key] for key in shape.defaults} == shape.defaults
    assert headless.pop("sparse_embedding_update") is False  # an option of headless models only
    assert headless == vanilla
    if shape.family == "gpt2":
        assert vanilla["decoder_input_dim"] == vanilla["decoder_output_dim"] == shape.dim
        untied = config_of(shape.untied)
        assert (vanilla["share_decoder_input_output_embed"], untied.pop("share_decoder_input_output_embed")) == (True, False)
        assert untied.pop("freeze_body") is False
        del vanilla["share_decoder_input_output_embed"]
        assert untied == vanilla


def test_a_field_the_family_does_not_have_fails_at_registration():
    """A typo in an entry's defaults would otherwise set nothing and leave the base's default."""
    with pytest.raises(KeyError, match="decoder_layer"):
        shapes.config_with_defaults("x_tiny", (models.MODEL_DATACLASS_REGISTRY["pythia_tiny"],), {"decoder_layer": 1})


def test_an_entry_may_not_take_a_registered_models_name():
    """fairseq's register_model would keep the first model of that name without a word."""
    with pytest.raises(ValueError, match="transformer_lm is registered already"):
        shapes.register_dataclass_model("transformer_lm", models.MODEL_REGISTRY["gpt2_tiny"],
                                        models.MODEL_DATACLASS_REGISTRY["gpt2_tiny"])
