"""The paper's model shapes (App. D): one entry per architecture, and every registration derives from it.

From each entry ``<name>`` the family's module registers ``<name>`` (unless fairseq has it),
``headless_<name>``, and ``<name>_untied`` where the vanilla head is tied (GPT-2). Imports no fairseq.
Adding an architecture: one ``Shape``, its two YAMLs, its row in tests/test_configs.py. docs/design.md#models."""

import dataclasses
from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Family:
    name: str
    # "module:Class" of every model of the family: how the exporter recognises a checkpoint's family.
    fairseq_model: str
    kind: str  # "encoder" (masked LM, §3.2) or "decoder" (causal LM, §3.3)
    # The vanilla head is tied, so causal fine-tuning (§3.3) needs a twin with a head of its own.
    untied_twin: bool


FAMILIES = {family.name: family for family in [
    Family("roberta", "fairseq.models.roberta:RobertaModel", "encoder", untied_twin=False),
    Family("gpt2", "fairseq.models.transformer_lm:TransformerLanguageModel", "decoder", untied_twin=True),
    Family("gpt_neox", "fairseq_headless.models.gpt_neox:GPTNeoXLanguageModel", "decoder", untied_twin=False),
]}


@dataclass(frozen=True)
class Shape:
    name: str  # the vanilla model / architecture name
    family: str  # a key of FAMILIES
    layers: int
    dim: int
    heads: int
    ffn: int
    paper: str  # what the shape mirrors, and where in the paper
    config: str  # the YAML pair: configs/<config>.yaml (vanilla), configs/h<config>.yaml (headless)
    # Other defaults, by the family's own field names (e.g. no dropout for the CPU-sized shapes).
    defaults: Mapping[str, object] = dataclasses.field(default_factory=dict)
    # The vanilla twin is fairseq's own architecture; only the headless one is registered here.
    vanilla_is_fairseqs: bool = False

    @property
    def headless(self) -> str:
        return f"headless_{self.name}"

    @property
    def untied(self) -> str | None:
        return f"{self.name}_untied" if FAMILIES[self.family].untied_twin else None

    @property
    def headless_config(self) -> str:
        return f"h{self.config}"


_NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0}

SHAPES = {shape.name: shape for shape in [
    Shape("roberta_base", "roberta", 12, 768, 12, 3072, "BERT-base, D.1", "mlm_base", vanilla_is_fairseqs=True),
    Shape("roberta_small", "roberta", 4, 512, 8, 2048,
          "BERT-small (google/bert_uncased_L-4_H-512_A-8), D.4: the vocabulary sweep and ablations", "mlm_small"),
    Shape("roberta_multilingual", "roberta", 6, 768, 12, 3072,
          "distilbert-base-multilingual-cased's body, D.3: 6 layers of BERT-base width", "mlm_multilingual"),
    Shape("roberta_tiny", "roberta", 2, 128, 2, 512, "CPU-sized, for the demo and the tests (not in the paper)",
          "mlm_tiny", defaults=_NO_DROPOUT),
    Shape("gpt2_quarter", "gpt2", 3, 192, 3, 768,
          "GPT-2 small with hidden size, heads and layers divided by 4, D.5 (Fig.7)", "lm_small"),
    Shape("gpt2_tiny", "gpt2", 2, 128, 2, 512, "CPU-sized, for the demo and the tests (not in the paper)",
          "lm_tiny", defaults=_NO_DROPOUT),
    Shape("pythia_70m", "gpt_neox", 6, 512, 8, 2048,
          "Pythia-70M (EleutherAI/pythia-70m-deduped's config.json), D.2, Tabs.3-4", "lm_pythia70m"),
    Shape("pythia_tiny", "gpt_neox", 2, 128, 2, 512, "CPU-sized, for the tests and the demo (not in the paper)",
          "lm_pythia_tiny"),
]}


def of_family(family: str):
    return [shape for shape in SHAPES.values() if shape.family == family]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def config_with_defaults(model_name: str, bases: tuple, defaults: Mapping[str, object], new_fields=(), doc=None):
    """The config dataclass of model ``model_name``: ``bases`` with the inherited fields ``defaults`` reset.

    Each field keeps the type and help of the one it overrides, so hydra and fairseq's argparse treat it as
    the base's; a name no base has raises ``KeyError`` at import. ``new_fields``: further ``(name, type,
    dataclasses.field(...))``; ``doc``: the docstring (by default the first base's)."""
    inherited = {}
    for base in reversed(bases):  # the first base's field wins, as in the class's MRO
        inherited.update({f.name: f for f in dataclasses.fields(base)})
    overridden = [(key, inherited[key].type, dataclasses.field(default=value, metadata=inherited[key].metadata))
                  for key, value in defaults.items()]
    config = dataclasses.make_dataclass(f"{_camel(model_name)}Config", [*overridden, *new_fields], bases=bases)
    config.__doc__ = doc or bases[0].__doc__
    return config


def register_dataclass_twins(shape: Shape, family_config: type, shape_fields: Mapping[str, object],
                             vanilla: type, headless: type) -> type:
    """Register ``shape.name`` (model class ``vanilla``) and ``shape.headless`` (``headless``) as models
    configured by dataclasses: ``family_config`` with the family's ``shape_fields`` and the entry's other
    defaults; the headless one adds ``sparse_embedding_update``. Returns the vanilla config."""
    from ..sparse_embedding import SparseEmbeddingUpdateConfig  # imports fairseq, hence here
    config = config_with_defaults(shape.name, (family_config,), {**shape_fields, **shape.defaults}, doc=shape.paper)
    register_dataclass_model(shape.name, vanilla, config)
    register_dataclass_model(shape.headless, headless,
                             config_with_defaults(shape.headless, (config, SparseEmbeddingUpdateConfig), {}))
    return config


def register_dataclass_model(name: str, model: type, config: type) -> type:
    """Register ``name`` as a subclass of ``model`` configured by ``config`` (a subclass per name, since
    fairseq's ``register_model`` stores the dataclass on the class)."""
    from fairseq.models import MODEL_REGISTRY, register_model  # here, so that the table imports without fairseq
    if name in MODEL_REGISTRY:  # fairseq would keep the model registered first and say nothing
        raise ValueError(f"model {name} is registered already: a shape entry may not reuse a model's name")
    return register_model(name, dataclass=config)(type(f"{_camel(name)}Model", (model,), {}))
