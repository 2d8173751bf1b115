"""LOCAL STUB of the objective module (another worktree writes the real one): deleted before the final commit."""
import torch
import torch.nn.functional as F

from ..cwt import cwt_loss

IGNORE = -100


def mask_tokens(input_ids, special_mask, *, mask_id, vocab_size, prob=0.15, generator=None):
    labels = input_ids.clone()
    chosen = (torch.rand(input_ids.shape, generator=generator) < prob) & ~special_mask
    labels[~chosen] = IGNORE
    inputs = input_ids.clone()
    roll = torch.rand(input_ids.shape, generator=generator)
    inputs[chosen & (roll < 0.8)] = mask_id
    random = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[random]
    return inputs, labels


def headless_loss(model, input_ids, attention_mask, labels, *, negatives="batch", scope="local", temperature=1.0,
                  chunk_size=0):
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    scored = labels != IGNORE
    out = cwt_loss(hidden[scored], labels[scored], embedding_matrix=model.get_input_embeddings().weight,
                   negatives=negatives, temperature=temperature, chunk_size=chunk_size)
    return out.loss, out.num_positions


def vanilla_loss(model, input_ids, attention_mask, labels):
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    scored = labels != IGNORE
    return F.cross_entropy(logits[scored].float(), labels[scored], reduction="sum"), int(scored.sum())
