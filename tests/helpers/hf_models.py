"""Tiny randomly initialised transformers models of each family the Hugging Face engine is checked on,
and batches for them (labels aligned with positions, IGNORE where nothing is scored)."""
import torch

from fairseq_headless.hf.objective import IGNORE

VOCAB, PAD = 97, 1  # RoBERTa numbers positions from its padding id 1: every family pads with 1
FAMILIES = ("llama", "gpt_neox", "modernbert", "bert", "roberta")
CAUSAL = ("llama", "gpt_neox")


def config(family: str, vocab: int = VOCAB):
    import transformers as T

    small = dict(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, pad_token_id=PAD)
    if family == "llama":  # SmolLM2's kind: grouped KV heads, tied embeddings
        return T.LlamaConfig(**small, num_key_value_heads=2, intermediate_size=64, tie_word_embeddings=True,
                             bos_token_id=0, eos_token_id=2)
    if family == "gpt_neox":  # Pythia's kind: untied head, parallel residual
        return T.GPTNeoXConfig(**small, intermediate_size=64, tie_word_embeddings=False,
                               hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=2)
    if family == "modernbert":  # GeGLU, a head transform, decoder tied to the embeddings
        return T.ModernBertConfig(**small, intermediate_size=48, bos_token_id=0, eos_token_id=2, cls_token_id=0,
                                  sep_token_id=2, global_attn_every_n_layers=2, local_attention=4)
    if family == "bert":
        return T.BertConfig(**small, intermediate_size=64, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
    if family == "roberta":
        return T.RobertaConfig(**small, intermediate_size=64, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0, max_position_embeddings=64, bos_token_id=0,
                               eos_token_id=2)
    raise ValueError(family)


def tiny_model(family: str, seed: int = 0, vocab: int = VOCAB):
    """The family's LM (causal or masked), eval mode (no dropout), weights perturbed so that no LayerNorm is
    the identity and no bias is zero (a wrong parameter would then show)."""
    import transformers as T

    torch.manual_seed(seed)
    cls = {"llama": T.LlamaForCausalLM, "gpt_neox": T.GPTNeoXForCausalLM, "modernbert": T.ModernBertForMaskedLM,
           "bert": T.BertForMaskedLM, "roberta": T.RobertaForMaskedLM}[family]
    model = cls(config(family, vocab))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def batch(family: str, rows: int = 3, length: int = 10, seed: int = 0, vocab: int = VOCAB, mask_prob: float = 0.3):
    """(input_ids, attention_mask, labels): random tokens, the last row right-padded; causal families score the
    next token, masked ones ~mask_prob of the real positions (their inputs replaced by id 3 as a mask)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab, (rows, length), generator=generator)
    attention_mask = torch.ones_like(ids)
    attention_mask[-1, length // 2:] = 0
    ids = ids.masked_fill(attention_mask.eq(0), PAD)
    if family in CAUSAL:
        labels = torch.cat([ids[:, 1:], torch.full((rows, 1), IGNORE)], dim=1)
        labels = labels.masked_fill(torch.cat([attention_mask[:, 1:], torch.zeros(rows, 1, dtype=torch.long)], 1).eq(0),
                                    IGNORE)
        return ids, attention_mask, labels
    selected = (torch.rand(ids.shape, generator=generator) < mask_prob) & attention_mask.bool()
    selected[:, 1] = True
    labels = ids.masked_fill(~selected, IGNORE)
    return ids.masked_fill(selected, 3), attention_mask, labels
