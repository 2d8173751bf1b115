"""The GPT-NeoX (Pythia) decoder: rotary and parallel-residual blocks against a float64 reference
written from the GPT-NeoX equations, the whole model against transformers' GPTNeoXForCausalLM,
Pythia-70M's parameter count, incremental decoding, padding, and the headless twin."""

import math

import pytest
import torch

from conftest import assert_close_computations, build_task_and_model, rounding_bound

from fairseq.models import MODEL_DATACLASS_REGISTRY

from fairseq_headless.criterions.cwt_criterion import input_embeddings
from fairseq_headless.models.gpt_neox import (
    GPTNeoXLayer,
    apply_rotary,
    rotary_cos_sin,
)
from helpers.references import randomize, to_transformers_key


# ---------------------------------------------------------------------------------------------
# float64 reference, written from the equations (GPT-NeoX / Pythia), loops where they are clearer


def reference_rotary(x, positions, rotary_dim, base):
    """Rotate each pair (i, i + rotary_dim / 2) of x (..., length, head_dim) by position * base^(-2i / rotary_dim)."""
    out = x.clone()
    half = rotary_dim // 2
    for i in range(half):
        theta = positions.double() * base ** (-2.0 * i / rotary_dim)  # (length,)
        a, b = x[..., i], x[..., i + half]
        out[..., i] = a * torch.cos(theta) - b * torch.sin(theta)
        out[..., i + half] = b * torch.cos(theta) + a * torch.sin(theta)
    return out


def layer_norm(h, weight, bias, eps):
    mean = h.mean(-1, keepdim=True)
    var = ((h - mean) ** 2).mean(-1, keepdim=True)
    return (h - mean) / torch.sqrt(var + eps) * weight + bias


def reference_layer(x, p, heads, rotary_pct, base, eps, parallel):
    """One GPT-NeoX layer on x (batch, length, dim); p: the layer's parameters by GPT-NeoX name."""
    batch, length, dim = x.shape
    head_dim = dim // heads
    rotary_dim = int(head_dim * rotary_pct)
    positions = torch.arange(length)

    def attention(h):
        # query_key_value rows are laid out [heads, 3, head_dim] (GPT-NeoX's fused layout)
        qkv = (h @ p["attention.query_key_value.weight"].T + p["attention.query_key_value.bias"])
        qkv = qkv.view(batch, length, heads, 3, head_dim).transpose(1, 2)  # (batch, heads, length, 3, head_dim)
        q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
        q, k = reference_rotary(q, positions, rotary_dim, base), reference_rotary(k, positions, rotary_dim, base)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        future = torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)
        probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(batch, length, dim)
        return out @ p["attention.dense.weight"].T + p["attention.dense.bias"]

    def mlp(h):
        inner = h @ p["mlp.dense_h_to_4h.weight"].T + p["mlp.dense_h_to_4h.bias"]
        inner = 0.5 * inner * (1 + torch.erf(inner / math.sqrt(2)))  # exact GELU
        return inner @ p["mlp.dense_4h_to_h.weight"].T + p["mlp.dense_4h_to_h.bias"]

    ln1 = layer_norm(x, p["input_layernorm.weight"], p["input_layernorm.bias"], eps)
    attn = attention(ln1)
    if parallel:  # x + attn(ln1(x)) + mlp(ln2(x))
        return x + attn + mlp(layer_norm(x, p["post_attention_layernorm.weight"], p["post_attention_layernorm.bias"], eps))
    y = x + attn
    return y + mlp(layer_norm(y, p["post_attention_layernorm.weight"], p["post_attention_layernorm.bias"], eps))


# ---------------------------------------------------------------------------------------------


def test_rotary_matches_the_pairwise_rotation_and_depends_only_on_relative_position():
    generator = torch.Generator().manual_seed(0)
    head_dim, rotary_dim, base = 64, 16, 10000.0
    q = torch.randn(2, 3, 9, head_dim, generator=generator, dtype=torch.float64)
    k = torch.randn(2, 3, 9, head_dim, generator=generator, dtype=torch.float64)
    positions = torch.arange(9)
    cos, sin = rotary_cos_sin(positions, rotary_dim, base, torch.float64)
    rotated = apply_rotary(q, cos, sin)
    # the angle m * theta is rounded (m eps relative to 1 rad), then cos/sin and a multiply-add
    assert_close_computations(rotated, reference_rotary(q, positions, rotary_dim, base), terms=len(positions) + 4)
    assert torch.equal(rotated[..., rotary_dim:], q[..., rotary_dim:])  # 75% of each head is not rotated

    # <R(m) q, R(n) k> depends on m - n only: shifting every position by 100 changes no score
    shifted_cos, shifted_sin = rotary_cos_sin(positions + 100, rotary_dim, base, torch.float64)
    scores = apply_rotary(q, cos, sin) @ apply_rotary(k, cos, sin).transpose(-1, -2)
    shifted = apply_rotary(q, shifted_cos, shifted_sin) @ apply_rotary(k, shifted_cos, shifted_sin).transpose(-1, -2)
    # each rotated element moves by <= (m + 100) eps |q| through its angle, then a head_dim-term dot product
    scale = head_dim * q.abs().max().item() * k.abs().max().item()  # bounds sum |q_i k_i|
    assert_close_computations(scores, shifted, terms=len(positions) + 100 + head_dim, scale=scale)


@pytest.mark.parametrize("parallel", [True, False], ids=["parallel_residual", "sequential_residual"])
def test_layer_matches_float64_reference(parallel):
    cfg = MODEL_DATACLASS_REGISTRY["pythia_tiny"](use_parallel_residual=parallel)  # the registered config
    layer = randomize(GPTNeoXLayer(cfg)).double().eval()
    x = torch.randn(2, 11, cfg.decoder_embed_dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    positions = torch.arange(11).expand(2, 11)
    out = layer(x, positions, mask=None, causal=True)
    params = {name: p.detach() for name, p in layer.named_parameters()}
    expected = reference_layer(x, params, cfg.decoder_attention_heads, cfg.rotary_pct, cfg.rotary_base,
                               cfg.layer_norm_eps, parallel)
    # float64 both: the longest sums are the FFN's (D + ffn terms) and attention's (T + head_dim)
    assert_close_computations(out, expected, terms=cfg.decoder_embed_dim + cfg.decoder_ffn_embed_dim + 11 + 16)


def transformers_twin(model, cfg, vocab):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    hf_cfg = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=cfg.decoder_embed_dim, num_hidden_layers=cfg.decoder_layers,
        num_attention_heads=cfg.decoder_attention_heads, intermediate_size=cfg.decoder_ffn_embed_dim,
        max_position_embeddings=cfg.max_target_positions, rotary_pct=cfg.rotary_pct,
        rotary_emb_base=cfg.rotary_base, layer_norm_eps=cfg.layer_norm_eps, hidden_act="gelu",
        use_parallel_residual=cfg.use_parallel_residual, tie_word_embeddings=False,
        attention_bias=True, hidden_dropout=0.0, attention_dropout=0.0,
    )
    hf = GPTNeoXForCausalLM(hf_cfg).double().eval()
    state = {to_transformers_key(k): v for k, v in model.state_dict().items()}
    if "lm_head.weight" not in state:  # headless: e^T as the head
        state["lm_head.weight"] = state["gpt_neox.embed_in.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert unexpected == [] and all("rotary_emb" in k for k in missing), (missing, unexpected)
    return hf


@pytest.mark.parametrize("config", ["lm_pythia_tiny", "hlm_pythia_tiny"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel_residual", "sequential_residual"])
def test_model_matches_transformers_gpt_neox(config, parallel, tiny_data):
    cfg, task, model = build_task_and_model(config, tiny_data, f"+model.use_parallel_residual={parallel}")
    randomize(model, seed=2)
    model.double().eval()
    vocab = len(task.source_dictionary)
    hf = transformers_twin(model, cfg.model, vocab)
    tokens = torch.randint(4, vocab, (3, 17), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits = model(tokens)[0]
        expected = hf(tokens).logits
        # transformers computes the rotary angles in float32 even for a float64 model: each angle m * theta is
        # off by ~m eps32, in every layer; the float64 sums are far below that
        angle_terms = tokens.size(1) * cfg.model.decoder_layers
        assert_close_computations(logits, expected, terms=angle_terms, dtype=torch.float32)
        if config.startswith("h"):  # headless: features, and logits with e^T
            features = model(tokens, features_only=True)[0]
            hidden = hf(tokens, output_hidden_states=True).hidden_states[-1]
            assert_close_computations(features, hidden, terms=angle_terms, dtype=torch.float32)
            embeddings = input_embeddings(model).weight
            scale = (features.abs().max() * embeddings.abs().max() * features.size(-1)).item()  # sum|f_i e_i|
            assert_close_computations(logits, features @ embeddings.T, terms=features.size(-1), scale=scale)


def test_pythia_70m_has_pythias_70426624_parameters(tmp_path):
    # The Pythia tokenizer's 50,277 ids + 4 fairseq specials, padded to a multiple of 128 (prepare_data.py
    # --padding-factor 128): 50,304 rows, as Pythia's embedding matrices.
    rows = 50304 - 4
    (tmp_path / "dict.txt").write_text("".join(f"{i} 0\n" for i in range(rows)))
    _, task, vanilla = build_task_and_model("lm_pythia70m", tmp_path)
    _, _, headless = build_task_and_model("hlm_pythia70m", tmp_path)
    assert len(task.source_dictionary) == 50304
    assert sum(p.numel() for p in vanilla.parameters()) == 70_426_624
    assert sum(p.numel() for p in headless.parameters()) == 70_426_624 - 50304 * 512  # no head at all
    assert not [k for k in headless.state_dict() if "embed_out" in k]
    shapes = {k: tuple(v.shape) for k, v in vanilla.state_dict().items()}
    assert shapes["decoder.embed_out.weight"] == shapes["decoder.embed_in.weight"] == (50304, 512)
    assert vanilla.decoder.embed_out.weight.data_ptr() != vanilla.decoder.embed_in.weight.data_ptr()  # untied
    assert shapes["decoder.layers.5.attention.query_key_value.weight"] == (1536, 512)
    assert vanilla.max_positions() == 2048


def test_pythia_init_is_small_init_and_wang_init(tiny_data):
    _, _, model = build_task_and_model("lm_pythia70m", tiny_data)
    params = dict(model.named_parameters())
    small, wang = math.sqrt(2 / (5 * 512)), 2 / 6 / math.sqrt(512)
    assert params["decoder.layers.0.attention.query_key_value.weight"].std().item() == pytest.approx(small, rel=0.02)
    assert params["decoder.layers.0.mlp.dense_4h_to_h.weight"].std().item() == pytest.approx(wang, rel=0.02)
    assert params["decoder.layers.0.attention.dense.weight"].std().item() == pytest.approx(wang, rel=0.02)
    assert params["decoder.layers.0.mlp.dense_h_to_4h.bias"].abs().sum().item() == 0


@pytest.fixture(scope="module")
def tiny_model(tiny_data):
    torch.manual_seed(0)
    _, task, model = build_task_and_model("lm_pythia_tiny", tiny_data)
    return task, randomize(model, seed=4).eval()


def incremental_terms(model, length):
    """Longest chain of roundings behind one logit: each layer's FFN (D + ffn) and attention (T + D) sums,
    then the head's D-term dot product."""
    layer = model.decoder.layers[0]
    dim, ffn = layer.mlp.dense_h_to_4h.in_features, layer.mlp.dense_h_to_4h.out_features
    return len(model.decoder.layers) * (2 * dim + ffn + length) + dim


def test_incremental_decoding_equals_full_forward(tiny_model):
    task, model = tiny_model
    tokens = torch.randint(4, len(task.source_dictionary), (3, 12), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        full = model(tokens)[0]
        state = {}
        steps = [model.decoder(tokens[:, :t], incremental_state=state)[0][:, -1] for t in range(1, 13)]
        # a cached step against the whole prefix: the same sums over other kernels (per layer, D + ffn in
        # the FFN and T in attention; then the head's D)
        terms = incremental_terms(model, tokens.size(1))
        assert_close_computations(torch.stack(steps, dim=1), full, terms=terms)

        # beam search reorders the cache between steps: continue from reordered (and duplicated) rows
        state = {}
        model.decoder(tokens[:, :6], incremental_state=state)
        order = torch.tensor([2, 0, 0])
        model.decoder.reorder_incremental_state_scripting(state, order)
        reordered = tokens[order]
        step = model.decoder(reordered[:, :7], incremental_state=state)[0][:, -1]
        assert_close_computations(step, full[order][:, 6], terms=terms)


def test_beam_search_with_the_cache_equals_beam_search_without(tiny_model):
    from fairseq.sequence_generator import SequenceGenerator

    task, model = tiny_model
    prefix = torch.randint(4, len(task.source_dictionary), (2, 4), generator=torch.Generator().manual_seed(6))
    sample = {"net_input": {"src_tokens": prefix, "src_lengths": torch.tensor([4, 4])}}
    results = []
    for cached in (True, False):
        generator = SequenceGenerator([model], task.target_dictionary, beam_size=3, max_len_b=12, min_len=12)
        generator.model.has_incremental = cached  # False: every step recomputes the whole prefix
        hypos = generator.generate([model], sample, prefix_tokens=prefix)
        results.append([(h["tokens"].tolist(), h["score"].item()) for beam in hypos for h in beam])
    assert [t for t, _ in results[0]] == [t for t, _ in results[1]]
    # a hypothesis' score: a mean of per-token log-softmaxes over V, each after the model's own sums
    scores = [s for _, s in results[1]]
    terms = incremental_terms(model, 16) + len(task.target_dictionary) + 16
    assert [s for _, s in results[0]] == pytest.approx(scores, abs=rounding_bound(terms, max(map(abs, scores))))


def test_padding_changes_no_score(tiny_model):
    task, model = tiny_model
    pad = task.source_dictionary.pad()
    tokens = torch.randint(4, len(task.source_dictionary), (1, 9), generator=torch.Generator().manual_seed(7))
    left = torch.cat([torch.full((1, 3), pad), tokens], dim=1)
    right = torch.cat([tokens, torch.full((1, 3), pad)], dim=1)
    with torch.no_grad():
        alone = model(tokens)[0]
        terms = incremental_terms(model, left.size(1))  # padded batches: the same sums, other shapes
        assert_close_computations(model(torch.cat([left, right]))[0][0, 3:], alone[0], terms=terms)
        assert_close_computations(model(torch.cat([left, right]))[0][1, :9], alone[0], terms=terms)
        # a left-padded prompt also decodes incrementally: positions count real tokens only
        state = {}
        model.decoder(left[:, :8], incremental_state=state)
        step = model.decoder(left, incremental_state=state)[0][:, -1]
        assert_close_computations(step, alone[:, -1], terms=terms)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_forward_is_close_to_float32(dtype, tiny_data):
    """fairseq's fp16 training casts the model: rotary angles stay in fp32, nothing breaks."""
    torch.manual_seed(0)
    _, task, model = build_task_and_model("hlm_pythia_tiny", tiny_data)
    model.eval()
    tokens = torch.randint(4, len(task.source_dictionary), (2, 64), generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        reference = model(tokens, features_only=True)[0]
        half = model.to(dtype)(tokens, features_only=True)[0]
    assert half.dtype == dtype
    assert (half.float() - reference).abs().max().item() < 0.1 * reference.abs().max().item()


def test_headless_pythia_trains_every_parameter_and_has_no_head(tiny_data):
    torch.manual_seed(0)
    cfg, task, model = build_task_and_model("hlm_pythia_tiny", tiny_data)
    assert not [k for k in model.state_dict() if "embed_out" in k]
    criterion = task.build_criterion(cfg.criterion)
    tokens = torch.randint(4, len(task.source_dictionary), (4, 32), generator=torch.Generator().manual_seed(9))
    sample = {"net_input": {"src_tokens": tokens[:, :-1], "src_lengths": torch.full((4,), 31)},
              "target": tokens[:, 1:], "ntokens": 4 * 31, "nsentences": 4}
    loss, sample_size, _ = criterion(model, sample)
    loss.backward()
    assert sample_size == 4 * 31
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []


def test_freeze_body_trains_the_head_only(tiny_data):
    _, _, model = build_task_and_model("lm_pythia_tiny", tiny_data, "+model.freeze_body=true")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["decoder.embed_out.weight"]
    with pytest.raises(ValueError, match="nothing to train"):
        build_task_and_model("hlm_pythia_tiny", tiny_data, "+model.freeze_body=true")

