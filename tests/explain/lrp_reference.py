"""An explicit layer-by-layer LRP propagation of a HF Llama in float64 (AttnLRP's rules, no gradients) and the
tiny Llama the AttnLRP tests build; see test_explain_attnlrp.py."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

D = torch.float64
EPSILON = 1e-6  # deco.explain.attnlrp.EPSILON, written out: the reference must not follow a changed default


def _stab(z, eps):
    """z + eps sign(z), sign(0) = +1."""
    return z + eps * torch.where(z >= 0, 1.0, -1.0).to(z.dtype)


def _lin(x, weight, rel, eps):
    """Epsilon rule: R_in_i = sum_j (x_i W_ji / (z_j + eps sign z_j)) R_j, from the contributions x_i W_ji."""
    contrib = x[..., None, :] * weight  # ... j i
    z = contrib.sum(-1)
    return (contrib * (rel / _stab(z, eps))[..., None]).sum(-2)


def _sum_rule(a, b, rel):
    """LRP-0 over a + b (residual): each summand keeps its share."""
    return a / (a + b) * rel, b / (a + b) * rel


def _rms(x, norm):
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon) * norm.weight.detach().to(D)


def _rope_matrices(cfg, t):
    """T hd hd: q_rot = M_p q (cos / sin of HF's default RoPE; rotate_half as the matrix P)."""
    hd = cfg.hidden_size // cfg.num_attention_heads
    inv = 1.0 / (cfg.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2, dtype=D) / hd))
    ang = torch.arange(t, dtype=D)[:, None] * torch.cat([inv, inv])[None]  # T hd
    half = hd // 2
    rot = torch.zeros(hd, hd, dtype=D)
    rot[:half, half:] = -torch.eye(half, dtype=D)
    rot[half:, :half] = torch.eye(half, dtype=D)
    return torch.diag_embed(ang.cos()) + torch.diag_embed(ang.sin()) @ rot


def reference(llm, embeds, rows, targets, eps=EPSILON, split=0.5, softmax="rule"):
    """(logits T V, relevance T d at the input embeddings) by explicit LRP (module docstring)."""
    cfg, w = llm.config, lambda m: m.weight.detach().to(D)
    heads, kv, hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    x, t = embeds.detach().to(D), embeds.shape[0]
    rope, causal = _rope_matrices(cfg, t), torch.ones(t, t).tril().bool()
    saved = []
    for layer in llm.model.layers:
        att, mlp = layer.self_attn, layer.mlp
        n1 = _rms(x, layer.input_layernorm)
        q = (n1 @ w(att.q_proj).T).reshape(t, heads, hd).transpose(0, 1)  # H T hd
        k = (n1 @ w(att.k_proj).T).reshape(t, kv, hd).transpose(0, 1)
        v = (n1 @ w(att.v_proj).T).reshape(t, kv, hd).transpose(0, 1)
        qr, kr = torch.einsum("pab,hpb->hpa", rope, q), torch.einsum("pab,hpb->hpa", rope, k)
        group = [h * kv // heads for h in range(heads)]
        scores = torch.stack([qr[h] @ kr[group[h]].T for h in range(heads)]) * hd**-0.5  # H T T
        probs = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
        out = torch.stack([probs[h] @ v[group[h]] for h in range(heads)])  # H T hd
        cat = out.transpose(0, 1).reshape(t, -1)
        a = cat @ w(att.o_proj).T
        x1 = x + a
        n2 = _rms(x1, layer.post_attention_layernorm)
        g, u = n2 @ w(mlp.gate_proj).T, n2 @ w(mlp.up_proj).T
        act = torch.nn.functional.silu(g)
        m = (act * u) @ w(mlp.down_proj).T
        saved.append((x, n1, q, k, v, qr, kr, scores, probs, out, cat, a, x1, n2, g, u, act, m, group))
        x = x1 + m
    nf = _rms(x, llm.model.norm)
    logits = nf @ w(llm.lm_head).T
    rel_logits = torch.zeros_like(logits)
    rel_logits[rows, targets] = logits[rows, targets]  # R = z at the explained logits (their sum)
    rel = _lin(nf, w(llm.lm_head), rel_logits, eps)  # identity rule through the final norm
    for layer, (x, n1, q, k, v, qr, kr, scores, probs, out, cat, a, x1, n2, g, u, act, m, group) in zip(
        reversed(llm.model.layers), reversed(saved)
    ):
        att, mlp = layer.self_attn, layer.mlp
        r_x1, r_m = _sum_rule(x1, m, rel)
        r_h = _lin(act * u, w(mlp.down_proj), r_m, eps)
        r_act, r_u = split * r_h, split * r_h  # uniform rule on gate * up; identity rule on SiLU: R_g = R_act
        r_x1 = r_x1 + _lin(n2, w(mlp.gate_proj), r_act, eps) + _lin(n2, w(mlp.up_proj), r_u, eps)  # norm: identity
        r_x, r_a = _sum_rule(x, a, r_x1)
        r_out = _lin(cat, w(att.o_proj), r_a, eps).reshape(t, heads, hd).transpose(0, 1)  # H T hd
        r_qr, r_kr, r_v = torch.zeros_like(qr), torch.zeros_like(kr), torch.zeros_like(v)
        for h in range(heads):
            z = probs[h][:, :, None] * v[group[h]][None]  # i k j: A_ik V_kj
            r_z = z / out[h][:, None, :] * r_out[h][:, None, :]
            r_probs = split * r_z.sum(-1)
            r_v[group[h]] += split * r_z.sum(0)
            x_in = scores[h].masked_fill(~causal, 0.0)  # the softmax's input logits (masked entries carry nothing)
            if softmax == "rule":
                r_scores = x_in * (r_probs - probs[h] * r_probs.sum(-1, keepdim=True))
            elif softmax == "identity":
                r_scores = r_probs
            else:  # "stop": no relevance through the attention weights (CP-LRP)
                r_scores = torch.zeros_like(r_probs)
            c = qr[h][:, None, :] * kr[group[h]][None] * hd**-0.5  # i k d: the terms of the score x_ik
            r_c = c / torch.where(causal, x_in, 1.0)[..., None] * r_scores[..., None]  # r_scores = 0 where masked
            r_qr[h] += split * r_c.sum(1)
            r_kr[group[h]] += split * r_c.sum(0)
        # RoPE, LRP-0 over q_rot_b = sum_a M_p[b, a] q_a
        r_q = (q[:, :, None, :] * rope[None] * (r_qr / qr)[..., None]).sum(-2)
        r_k = (k[:, :, None, :] * rope[None] * (r_kr / kr)[..., None]).sum(-2)
        flat = lambda r: r.transpose(0, 1).reshape(t, -1)  # noqa: E731
        r_n1 = sum(_lin(n1, w(p), flat(r), eps) for p, r in ((att.q_proj, r_q), (att.k_proj, r_k), (att.v_proj, r_v)))
        rel = r_x + r_n1  # identity rule through the input norm
    return logits, rel


def tiny_llama(seed=0, layers=2):
    cfg = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-2,  # large enough that dropping or flipping it shows
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    llm = LlamaForCausalLM(cfg).to(D).eval()
    with torch.no_grad():
        for p in llm.parameters():  # HF's 0.02 init makes attention nearly uniform: spread it out
            p.copy_(torch.randn_like(p) * (0.4 if p.dim() == 2 else 0.3) + (1.0 if p.dim() == 1 else 0.0))
    return llm
