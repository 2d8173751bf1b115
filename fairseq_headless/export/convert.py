"""Export a fairseq-headless checkpoint to a Hugging Face folder, and prove both compute the same numbers.

The paper evaluates every model with Hugging Face tooling (§4.1, §4.2, §5, App. E). :func:`convert` reads
the checkpoint, maps its weights through one table per family (:mod:`.weights`), rebuilds the tokenizer
with fairseq's ids (:mod:`.tokenizer`), saves, reloads with the Auto classes and compares outputs with
fairseq (fp32, max abs difference <= 1e-4, or :class:`ParityError`). docs/export.md."""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint_reading import build_model, read_checkpoint
from ..data.folder import DataFolder, open_data_folder
from ..files import atomic_folder
from . import tokenizer as export_tokenizer
from .tokenizer import (MASK, ParityError, TOKENIZER_CHECK_LINES, check_dictionary, check_tokenizer, never_predicted,
                        raw_tokenizer, sample_lines)
from .weights import Export, family_of, hf_class_of
from ..cli import InputError

# A headless encoder's model classes, copied verbatim into its export (config.json's auto_map names them).
MODELING_FILE = Path(__file__).with_name("modeling_headless_roberta.py")
TOLERANCE = 1e-4  # max abs difference, fp32, fairseq vs Hugging Face
PARITY_BATCH, PARITY_MAX_LENGTH = 2, 512


logger = logging.getLogger(__name__)


# -- the source: checkpoint, data folder, fairseq model --

def read_data_folder(cfg, data_option: Path | None, tokenizer: tuple = ()) -> DataFolder:
    """The data folder of the checkpoint (task.data, its shard0 if a colon list) or --data."""
    data = data_option if data_option else cfg.task.data
    where = f"--data {data}" if data_option else f"the checkpoint's task.data {data}"
    try:
        folder = open_data_folder(data, where, tokenizer=tokenizer)
        folder.require_dictionary(where)
    except InputError as e:
        fix = "check the path" if data_option else "pass the folder prepare_data.py wrote as --data"
        raise InputError(f"{e}; {fix}") from None
    return folder


def parity(fairseq_model, hf_model, export: Export, rows: int) -> dict:
    """Max abs differences on random ids: a full-length row and a right-padded one (pad positions left out:
    fairseq zeroes them, HF does not); fairseq's e^T gets the headless export's never-predicted exclusion."""
    import torch
    length = min(export.max_length, PARITY_MAX_LENGTH)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, rows, (PARITY_BATCH, length), generator=generator)
    ids[ids == 1] = 3  # no pad inside the text
    ids[1, length // 2:] = 1
    real = ids.ne(1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's deprecation note on fairseq's masks
        fs_hidden = fairseq_model(ids, features_only=True)[0]
        fs_logits = fairseq_model(ids)[0]  # the vanilla head, or e^T for headless models
        hf_hidden = hf_model.base_model(input_ids=ids, attention_mask=real.long()).last_hidden_state
        hf_logits = hf_model(input_ids=ids, attention_mask=real.long()).logits
    never = getattr(hf_model.config, "never_predicted", None)
    if never:
        fs_logits[..., never] = torch.finfo(fs_logits.dtype).min
    return {"hidden": float((fs_hidden - hf_hidden)[real].abs().max()),
            "logits": float((fs_logits - hf_logits)[real].abs().max())}


HEADLESS_ENCODER_NOTE = """\
Model type `headless_roberta`: its classes are this folder's `modeling_headless_roberta.py`, so every load
(`AutoConfig`, `AutoTokenizer`, `AutoModel`, `AutoModelForMaskedLM`, `AutoModelForSequenceClassification`,
`AutoModelForMultipleChoice`, `pipeline`) passes `trust_remote_code=True`; without it transformers refuses
(or asks). Masked-LM scores are e^T, no head parameter; the {never} ids of `never_predicted` in config.json
(`<s> <pad> </s> <unk>`, `<mask>`, the `madeupword` rows, the tokenizer's own specials) are never predicted.
Sequence classification uses RoBERTa's own classification head, as for a vanilla export.

"""


def model_card(info: dict) -> str:
    usage = {
        # the e^T scores, specials excluded, come from the folder's modeling_headless_roberta.py
        "HeadlessRobertaForMaskedLM":
            "from transformers import pipeline\n"
            "# trust_remote_code: the folder's modeling_headless_roberta.py scores with e^T (docs/export.md)\n"
            "fill_mask = pipeline(\"fill-mask\", model=PATH, trust_remote_code=True)\n"
            "fill_mask(\"The <mask> of the Union.\")\n"
            "# AutoModelForMaskedLM.from_pretrained(PATH, trust_remote_code=True) gives the same logits:\n"
            "# last_hidden_state @ word_embeddings.T, the ids of config.never_predicted at the lowest value",
        "RobertaForMaskedLM": "from transformers import pipeline\n"
                              "fill_mask = pipeline(\"fill-mask\", model=PATH)\n"
                              "fill_mask(\"The <mask> of the Union.\")",
    }
    usage["GPT2LMHeadModel"] = usage["GPTNeoXForCausalLM"] = (
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "tok = AutoTokenizer.from_pretrained(PATH); model = AutoModelForCausalLM.from_pretrained(PATH)\n"
        "model.generate(**tok(\"The\", return_tensors=\"pt\"), max_new_tokens=20)")
    usage = usage[info["hf_class"]]
    m = info["manifest"]
    return f"""---
library_name: transformers
tags: [fairseq-headless, {info["tag"]}]
---
# {info["arch"]} ({info["objective"]})

Exported from a fairseq-headless checkpoint by `scripts/convert_to_hf.py` (see docs/export.md).
Headless language models: Godey, de la Clergerie, Sagot, *Headless Language Models: Learning without
Predicting with Contrastive Weight Tying*, ICLR 2024.

| | |
| --- | --- |
| source checkpoint | `{info["checkpoint"]}` ({info["updates"]} updates) |
| fairseq architecture | `{info["arch"]}` (task `{info["task"]}`, criterion `{info["criterion"]}`) |
| training objective | {info["objective"]} |
| Hugging Face class | `{info["hf_class"]}` |
| head | {info["head"]} |
| data manifest | {f'`{info["manifest_path"]}` (sha256 `{info["manifest_sha256"][:16]}...`, created {m.get("created")})' if m else f'none (`{info["data"]}`, binarized by fairseq-preprocess)'} |
| tokenizer | {info["tokenizer_type"]} {", ".join(f"`{t}`" for t in info["tokenizer_files"])}, {info["tokenizer_size"]} ids; exported ids = fairseq ids (tokenizer id + 4) |
| parity with fairseq (fp32, random ids) | max abs diff hidden {info["parity"]["hidden"]:.2e}, logits {info["parity"]["logits"]:.2e} (bound {TOLERANCE:g}) |
| tokenizer check | {info["tokenizer_lines"]} lines identical to the preprocessing path |

```python
PATH = "{info["output"]}"
{usage}
```

{HEADLESS_ENCODER_NOTE.format(never=len(info["never_predicted"])) if info["never_predicted"] else ""}Text containing a special token's string (`<s>`, `</s>`, `<pad>`, `<unk>`, `<mask>`, `madeupwordNNNN`) is
read as that special token, as usual for Hugging Face tokenizers; the fairseq preprocessing read it as text.
{"Encoders get `<s> ... </s>` around a text, as fairseq's masked_lm task fed them; the RoBERTa pooler is not part of the export (fairseq has none)." if info["encoder"] else "Decoders get `<s>` before a text (the checkpoint's task had add_bos_token); `</s>` ends every line of the training data." if info["add_bos"] else "Decoders get no special tokens around a text (fairseq's language_modeling task without add_bos_token); `</s>` ends every line of the training data and is the end-of-text and start token for generation."}
"""


# -- the conversion --

@dataclass
class Source:
    """What the export reads: the checkpoint, its data folder's tokenizer and dictionary, the fairseq model."""

    checkpoint: Path
    state: dict
    arch: str
    folder: DataFolder
    reference: object  # the preprocessing path's tokenizer (data/tokenizer.py)
    raw: object  # the same tokenizer as a `tokenizers` object
    dictionary: object  # fairseq Dictionary of dict.txt
    size: int  # dict.txt's entries
    task: object
    model: object  # the fairseq model, fp32, eval mode


def save_model(hf_model, folder: Path) -> None:
    """save_pretrained; a headless encoder (model type ``headless_roberta``) also gets the modeling file,
    verbatim, and config.json's auto_map naming its classes: the Auto classes and pipelines load it
    from the folder, offline, with trust_remote_code=True."""
    from . import modeling_headless_roberta
    custom = isinstance(hf_model.config, modeling_headless_roberta.HeadlessRobertaConfig)
    if custom:
        hf_model.config.auto_map = {auto: f"{MODELING_FILE.stem}.{cls.__name__}"
                                    for auto, cls in modeling_headless_roberta.AUTO_MAP.items()}
    hf_model.save_pretrained(folder, safe_serialization=True)
    if custom:
        shutil.copyfile(MODELING_FILE, Path(folder) / MODELING_FILE.name)


def check_output(output: Path, data, force: bool) -> None:
    """The options checked before anything is read."""
    if (output.exists() or output.is_symlink()) and not force:
        raise InputError(f"--output {output} already exists; pass --force to replace it or choose another folder")
    if output.exists() and not output.is_dir():
        raise InputError(f"--output {output} exists and is not a folder; remove it first")
    if data is not None and not all(p.is_dir() for p in map(Path, str(data).split(":"))):
        raise InputError(f"--data {data}: not a folder")


def read_source(checkpoint: Path, data, tokenizer: tuple) -> Source:
    from fairseq.data import Dictionary
    from fairseq.models import ARCH_MODEL_REGISTRY, MODEL_REGISTRY
    import fairseq_headless.plugin  # noqa: F401  (registers the headless architectures)
    logger.info(f"loading {checkpoint} (weights_only)")
    state = read_checkpoint(checkpoint, "--checkpoint", data)
    arch = state["cfg"].model._name
    if arch not in ARCH_MODEL_REGISTRY and arch not in MODEL_REGISTRY:
        raise InputError(f"unknown architecture `{arch}`: registered neither by fairseq nor by fairseq_headless")
    folder = read_data_folder(state["cfg"], data, tuple(tokenizer))
    reference, raw = raw_tokenizer(folder)
    dictionary = Dictionary.load(str(folder.dictionary))
    size = check_dictionary(dictionary, folder.manifest, reference.vocab_size, folder.tokenizer[0])
    try:
        task, model = build_model(state)
    except RuntimeError as e:
        raise InputError(f"the checkpoint's weights do not fit the `{arch}` model its config describes "
                         f"({str(e).splitlines()[0]}...)") from None
    return Source(Path(checkpoint), state, arch, folder, reference, raw, dictionary, size, task, model)


def hf_model_of(source: Source, export: Export):
    """The transformers model holding the mapped weights; every fairseq weight must have found a place."""
    import torch
    state_dict = source.model.state_dict()
    for key, original in export.tied.items():
        if not torch.equal(state_dict[key], state_dict[original]):
            raise InputError(f"{key} was expected to be tied to {original} but differs")
    left = [k for k in state_dict if k not in export.used and k not in export.tied
            and not k.endswith((".version", "._float_tensor"))]
    if left:
        raise InputError(f"`{source.arch}` has weights this converter does not know where to put: "
                          f"{', '.join(left[:5])}")
    hf_model = hf_class_of(export.hf_class)(export.config)
    missing, unexpected = hf_model.load_state_dict(
        {k: v.detach().float().contiguous() for k, v in export.weights.items()}, strict=False)
    if missing or unexpected:
        raise InputError(f"internal: {export.hf_class} weights unmapped {missing[:5]} / unknown {unexpected[:5]}")
    return hf_model


def hf_tokenizer_of(source: Source, export: Export, add_bos: bool):
    import transformers
    shifted, unk = export_tokenizer.shift_to_fairseq_ids(source.raw, source.size, export.encoder, add_bos)
    specials = dict(eos_token="</s>", pad_token="<pad>", unk_token=unk,
                    bos_token="<s>" if export.encoder or add_bos else "</s>")
    if export.encoder:
        specials.update(cls_token="<s>", sep_token="</s>", mask_token=MASK)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=shifted, model_max_length=export.max_length,
                                                **specials)


def check_saved(workdir: Path, source: Source, export: Export, add_bos: bool) -> tuple[dict, int]:
    """Parity of the saved folder, reloaded with the Auto classes, with fairseq: (max abs diffs, lines checked)."""
    import torch
    import transformers
    logger.info("checking the saved folder against fairseq (reloaded with the Auto classes)")
    # trust_remote_code: a headless encoder runs the modeling file copied into the folder, as users will
    reloaded = getattr(transformers, export.auto_class).from_pretrained(
        workdir, dtype=torch.float32, trust_remote_code=True).eval()
    diffs = parity(source.model, reloaded, export, export.config.vocab_size)
    logger.info(f"max abs diff: hidden {diffs['hidden']:.2e}, logits {diffs['logits']:.2e} (bound {TOLERANCE:g})")
    if max(diffs.values()) > TOLERANCE:
        raise ParityError(f"the exported model differs from fairseq by {max(diffs.values()):.2e} "
                          f"(> {TOLERANCE:g}): hidden {diffs['hidden']:.2e}, logits {diffs['logits']:.2e}")
    loaded_tokenizer = transformers.AutoTokenizer.from_pretrained(workdir, trust_remote_code=True)
    lines = sample_lines(source.folder.path, source.dictionary, source.reference, TOKENIZER_CHECK_LINES)
    checked, skipped = check_tokenizer(loaded_tokenizer, source.reference, lines, export.encoder, add_bos)
    logger.info(f"tokenizer: {checked} lines identical to the preprocessing path"
        + (f" ({skipped} with special-token text skipped)" if skipped else ""))
    return diffs, checked


def card_info(source: Source, export: Export, family: str, output: Path, add_bos: bool, diffs: dict,
              checked: int) -> dict:
    cfg, folder, manifest = source.state["cfg"], source.folder, source.folder.manifest
    criterion = str(cfg.criterion._name) if cfg.get("criterion") else "unknown"
    headless = criterion.startswith("headless_")
    finetuned_from = cfg.get("checkpoint", {}).get("finetune_from_model")
    return dict(
        checkpoint=str(source.checkpoint), arch=source.arch, task=cfg.task._name, criterion=criterion,
        headless=headless,
        objective=("headless: Contrastive Weight Tying, no LM head in pretraining" if headless
                   else f"fine-tuning of `{finetuned_from}` with `{criterion}`" if finetuned_from
                   else f"vanilla: `{criterion}` with an LM head"),
        updates=source.state.get("optimizer_history", [{}])[-1].get("num_updates", "?"),
        hf_class=export.hf_class, head=export.head, encoder=export.encoder, manifest=manifest,
        manifest_path=str(folder.manifest_path), data=str(folder.path),
        manifest_sha256=hashlib.sha256(folder.manifest_path.read_bytes()).hexdigest() if manifest else None,
        tokenizer_type=folder.tokenizer_type, tokenizer_files=[str(t) for t in folder.tokenizer],
        tokenizer_size=source.reference.vocab_size,
        parity=diffs, tokenizer_lines=checked, output=str(output), family=family,
        never_predicted=getattr(export.config, "never_predicted", None) or [],
        add_bos=add_bos, tag="headless" if headless else "causal-finetuned" if finetuned_from else "vanilla")


def convert(checkpoint: Path, output: Path, data: Path | None = None, force: bool = False,
            tokenizer: tuple = ()) -> dict:
    """Export `checkpoint` to `output` (a folder written whole or not at all); returns a summary with the
    parity numbers. Raises InputError for bad input, ParityError when the
    saved folder does not compute what fairseq computes."""
    output = Path(output)
    check_output(output, data, force)
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # stderr is for the one error line
    import transformers
    from . import modeling_headless_roberta
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    source = read_source(Path(checkpoint), data, tuple(tokenizer))
    family = family_of(source.model, source.arch)
    export = family.export(source.model, source.task, source.arch)
    rows = export.config.vocab_size
    if rows != source.size + export.encoder:
        raise InputError(f"the checkpoint has {rows} embedding rows but {source.folder.dictionary} gives "
                          f"{source.size}{' + <mask>' if export.encoder else ''}; use the data folder it was "
                          f"trained on")
    add_bos = bool(getattr(source.task.cfg, "add_bos_token", False)) and not export.encoder
    hf_tokenizer = hf_tokenizer_of(source, export, add_bos)
    if isinstance(export.config, modeling_headless_roberta.HeadlessRobertaConfig):
        export.config.never_predicted = never_predicted(hf_tokenizer, source.reference)
    logger.info(f"mapping {family.name} weights to {export.hf_class}")
    hf_model = hf_model_of(source, export)

    try:
        with atomic_folder(output, replace=force) as workdir:  # published whole, or nothing is left
            save_model(hf_model, workdir)
            hf_tokenizer.save_pretrained(workdir)
            config_path = workdir / "tokenizer_config.json"  # loadable by transformers 4.x too
            tokenizer_config = json.loads(config_path.read_text())
            tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
            config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
            diffs, checked = check_saved(workdir, source, export, add_bos)
            info = card_info(source, export, family.name, output, add_bos, diffs, checked)
            (workdir / "README.md").write_text(model_card(info), encoding="utf-8")
    except FileExistsError:
        raise InputError(f"--output {output} appeared during the run; pass --force to replace it or choose "
                          f"another folder") from None
    logger.info(f"wrote {output} ({export.hf_class}, {family.name} family)")
    return {k: info[k] for k in ("family", "hf_class", "head", "parity", "tokenizer_lines", "output", "headless")}
