"""Zero-shot LAMBADA accuracy and perplexity of a causal model, as lm-evaluation-harness's ``lambada_openai``.

The paper's generation benchmark for its decoders (§4.2, Tab.3, Figs.4 and 7). :func:`evaluate` follows
lm-evaluation-harness step by step, so the numbers compare with the paper's. ``--model`` is a fairseq
checkpoint or a Hugging Face folder; the command line is :func:`main` (scripts/eval_lambada.py);
options and the steps: docs/decoders.md."""
from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .cli import InputError, Parser
from .progress import Progress

TASK = "lambada_openai"


# -- the task, as lm-evaluation-harness defines it --

def read_passages(path: Path) -> list[str]:
    """The passages of LAMBADA as jsonl, one ``{"text": ...}`` per line (evaluation.readers checks the lines)."""
    from .evaluation.readers import read_jsonl
    if not path.is_file():
        raise InputError(f"--data {path}: no such file (LAMBADA as jsonl, one {{\"text\": ...}} per line)")
    passages = []
    for lineno, record in read_jsonl(path, ["text"]):
        if not isinstance(record["text"], str):
            raise InputError(f"--data {path}, line {lineno}: the field \"text\" is no string")
        passages.append(record["text"])
    return passages


def split_passage(text: str) -> tuple[str, str]:
    """(context, continuation): lambada_openai.yaml's doc_to_text and doc_to_target."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def encode_pair(encode: Callable[[str], list], context: str, continuation: str, eot_id: int):
    """(context ids, continuation ids) as HFLM.loglikelihood / HFLM._encode_pair."""
    if context == "":
        return [eot_id], encode(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = encode(context + continuation)
    context_ids = encode(context)
    return context_ids, whole[len(context_ids):]


@dataclass
class Scorer:
    """What the evaluation needs from a model: its tokenizer and its logits."""

    encode: Callable[[str], list]  # text -> model input ids, no special tokens
    logits: Callable  # LongTensor (batch, length) -> (batch, length, vocab)
    eot_id: int
    pad_id: int
    max_length: int
    device: str = "cpu"
    description: str = ""


def loglikelihoods(scorer: Scorer, requests: Sequence[tuple], batch_size: int, progress=None) -> list:
    """(loglikelihood, greedy) of each (context ids, continuation ids), as HFLM._loglikelihood_tokens."""
    import torch
    # Longest first, as lm-eval (less padding; results do not depend on the order).
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i][0]) - len(requests[i][1]))
    results = [None] * len(requests)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        inputs, continuations = [], []
        for i in chunk:
            context_ids, continuation_ids = requests[i]
            if not continuation_ids or len(continuation_ids) > scorer.max_length:
                raise InputError(f"passage {i + 1}: its continuation is {len(continuation_ids)} tokens long")
            inputs.append((list(context_ids) + list(continuation_ids))[-(scorer.max_length + 1):][:-1])
            continuations.append(list(continuation_ids))
        width = max(len(x) for x in inputs)
        batch = torch.full((len(inputs), width), scorer.pad_id, dtype=torch.long)
        for row, ids in enumerate(inputs):
            batch[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        with torch.no_grad():
            logits = scorer.logits(batch.to(scorer.device))
        for row, i in enumerate(chunk):
            length, continuation = len(inputs[row]), continuations[row]
            selected = logits[row, length - len(continuation):length].float()
            log_probs = torch.log_softmax(selected, dim=-1)
            target = torch.tensor(continuation, device=log_probs.device)
            loglikelihood = log_probs.gather(1, target[:, None]).sum().item()
            greedy = bool((selected.argmax(dim=-1) == target).all())
            results[i] = (loglikelihood, greedy)
        if progress is not None:
            progress.update(len(chunk))
    return results


def lambada_metrics(results: Sequence[tuple]) -> dict:
    """lm-eval's aggregations: acc = mean(greedy); perplexity = exp(-mean(loglikelihood))."""
    return {"accuracy": sum(greedy for _, greedy in results) / len(results),
            "perplexity": math.exp(-sum(ll for ll, _ in results) / len(results))}


def evaluate(scorer: Scorer, passages: Sequence[str], batch_size: int = 8, show_progress: bool = False) -> dict:
    requests = [encode_pair(scorer.encode, *split_passage(text), scorer.eot_id) for text in passages]
    progress = Progress(TASK, len(requests), unit="passage") if show_progress else None
    try:
        results = loglikelihoods(scorer, requests, batch_size, progress)
    finally:
        if progress is not None:
            progress.close()
    return lambada_metrics(results)


# -- models --

def fairseq_scorer(checkpoint: Path, data_bin: Path | None, device: str) -> Scorer:
    """A fairseq checkpoint (read weights_only), tokenized with its data folder's tokenizer (fairseq ids)."""
    logging.getLogger("fairseq").setLevel(logging.WARNING)  # stderr is for the progress bar and errors
    from .checkpoint_reading import build_model, read_checkpoint
    from .data.folder import open_data_folder
    state = read_checkpoint(checkpoint, "--model", data=data_bin)
    cfg = state["cfg"]
    if cfg.get("task", {}).get("_name") != "language_modeling":
        raise InputError(f"--model {checkpoint}: not a checkpoint of fairseq's language_modeling task")
    data = cfg.task.data
    try:
        encode = open_data_folder(data, str(data)).fairseq_encoder()
    except InputError as e:
        raise InputError(f"{e}; the model's data folder (written by scripts/prepare_data.py) holds its tokenizer: "
                         "pass it with --data-bin DIR") from None
    task, model = build_model(state)
    model.to(device)
    dictionary = task.target_dictionary
    headless = cfg.model._name.startswith("headless")  # the plugin's naming: headless_<shape>
    # A headless decoder's logits are e^T scores; fairseq's </s> ends every line of the training text.
    return Scorer(encode=encode, logits=lambda tokens: model(tokens)[0], eot_id=dictionary.eos(),
                  pad_id=dictionary.pad(), max_length=int(model.max_positions()), device=device,
                  description=f"fairseq {cfg.model._name}" + (" (headless: e^T as the head)" if headless else ""))


def huggingface_scorer(folder: Path, device: str) -> Scorer:
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    transformers.logging.set_verbosity_error()  # stderr is for the progress bar and errors
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise InputError(f"--model {folder}: not a Hugging Face causal LM folder with its tokenizer ({e})".splitlines()[0])
    model.to(device).eval()
    config = model.config
    # HFLM.max_length: the model's context size, else the tokenizer's, else 2048.
    max_length = next((getattr(config, a) for a in ("n_positions", "max_position_embeddings", "n_ctx")
                       if getattr(config, a, None)), None)
    if max_length is None:
        max_length = tokenizer.model_max_length if tokenizer.model_max_length < 10**9 else 2048
    eot = tokenizer.eos_token_id
    return Scorer(encode=lambda text: tokenizer.encode(text, add_special_tokens=False),
                  logits=lambda tokens: model(tokens).logits, eot_id=eot if eot is not None else 0,
                  pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eot or 0),
                  max_length=int(max_length), device=device, description=f"huggingface {config.model_type}")


def model_kind(model: Path, data_bin: Path | None) -> str:
    """'fairseq' or 'huggingface', from the path alone (checked before anything heavy is imported)."""
    if model.is_file():
        return "fairseq"
    if model.is_dir() and (model / "config.json").is_file():
        if data_bin is not None:
            raise InputError("--data-bin is for fairseq checkpoints; a Hugging Face folder holds its own tokenizer")
        return "huggingface"
    raise InputError(f"--model {model}: neither a fairseq checkpoint file nor a folder with a config.json")


def load_scorer(model: Path, data_bin: Path | None, device: str | None) -> Scorer:
    kind = model_kind(model, data_bin)
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return fairseq_scorer(model, data_bin, device) if kind == "fairseq" else huggingface_scorer(model, device)


def build_parser() -> Parser:
    parser = Parser(prog="eval_lambada.py", description=__doc__.split("\n\n")[0],
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True,
                        help="fairseq checkpoint (.pt) or Hugging Face model folder")
    parser.add_argument("--data", type=Path, required=True, help="LAMBADA jsonl, {\"text\": ...} per line")
    parser.add_argument("--output", type=Path, help="write the results here as JSON (else stdout only)")
    parser.add_argument("--force", action="store_true", help="replace an existing --output")
    parser.add_argument("--data-bin", type=Path,
                        help="fairseq only: the data folder of the model (tokenizer + dict.txt); default: the "
                        "checkpoint's task.data")
    parser.add_argument("--batch-size", type=int, default=8, help="passages per forward pass (default 8)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--limit", type=int, help="score only the first N passages (smoke tests)")
    return parser


def main(argv: Sequence[str]) -> int:
    """The command line (scripts/eval_lambada.py), run under ``cli.run``: an InputError is one line, exit 2."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise InputError("--batch-size and --limit must be positive")
    if args.output is not None:
        if args.output.exists() and not args.force:
            raise InputError(f"--output {args.output} exists; pass --force to replace it")
        if not args.output.parent.is_dir():
            raise InputError(f"--output {args.output}: folder {args.output.parent} does not exist")
    model_kind(args.model, args.data_bin)
    passages = read_passages(args.data)[: args.limit]
    scorer = load_scorer(args.model, args.data_bin, args.device)
    metrics = evaluate(scorer, passages, args.batch_size, show_progress=True)
    result = {"task": TASK, **metrics, "passages": len(passages), "model": str(args.model),
              "model_type": scorer.description, "data": str(args.data), "max_length": scorer.max_length,
              "method": "lm-evaluation-harness lambada_openai: accuracy = share of passages whose last word is the "
                        "greedy continuation (a fraction); perplexity = exp(-mean continuation log-likelihood)"}
    print(f"{TASK}: accuracy {100 * metrics['accuracy']:.2f}%  perplexity {metrics['perplexity']:.2f}  "
          f"({len(passages)} passages, {scorer.description})")
    if args.output is not None:
        from .files import write_json_atomic
        write_json_atomic(args.output, result)
    return 0

