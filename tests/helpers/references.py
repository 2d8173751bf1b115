"""Plain references that several test files check the package against."""
import math


def reference_cwt(outputs, target_ids, embedding_matrix, negatives, temperature):
    """sum_i [log sum_j exp(o_i.n_j / t) - o_i.e_i / t], loops over rows, float64."""
    outputs, embedding_matrix = outputs.double(), embedding_matrix.double()
    ids = target_ids.tolist()
    columns = ids if negatives == "batch" else sorted(set(ids))
    total = 0.0
    correct = 0
    for i, token in enumerate(ids):
        scores = [float(outputs[i] @ embedding_matrix[c]) / temperature for c in columns]
        top = max(scores)
        total += top + math.log(sum(math.exp(s - top) for s in scores))
        total -= float(outputs[i] @ embedding_matrix[token]) / temperature
        correct += columns[scores.index(top)] == token
    return total, correct


def to_transformers_key(fairseq_key):
    """The export mapping: decoder.embed_out -> the head, every other decoder.X -> gpt_neox.X.

    Pythia's checkpoints call the head `embed_out`; transformers >= 5 calls it `lm_head` (and renames
    `embed_out` when loading with from_pretrained)."""
    key = fairseq_key.removeprefix("decoder.")
    return key.replace("embed_out.", "lm_head.") if key.startswith("embed_out.") else f"gpt_neox.{key}"


def randomize(module, seed=0):
    """Random values everywhere (biases and LayerNorms too, so that each of them matters)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype) * 0.1
            p.copy_(1 + noise if "norm" in name and name.endswith("weight") else noise)
    return module
