"""Each reducer's rule against a transcription of its authors' code (the formulas, written out again here in the
authors' own tensor steps), on crafted attention / feature tensors: the same kept indices and merged values.

Sources: dvlab-research/VisionZip `visionzip/clip_encoder.py` (CLIPVisionTower_VisionZip.forward);
42Shawn/LLaVA-PruMerge `llava/model/multimodal_encoder/clip_encoder.py` (token_prune_merge_advanced_plus);
DivPrune's `DivPrune(visual_feature_vectors, ...)` (vbdi/divprune, as carried by ModelTC/llmc);
pkunlp-icler/FastV `src/FastV/lmms-eval-with-kvcache/fastv_kvcache.py`.
"""

import pytest
import torch
import torch.nn.functional as F

from deco.models.reduction import VisionSignals, build_reducer
from deco.models.reduction.divprune import divprune_indices
from deco.models.reduction.fastv import fastv_keep_columns
from deco.models.reduction.pool import pool_matrix
from deco.models.reduction.prumerge import prumerge_matrix

G = torch.Generator().manual_seed(0)


def crafted(b=2, heads=3, n=36, d=8, dk=5):
    hidden = torch.randn(b, 1 + n, d, generator=G)
    attn = torch.softmax(torch.randn(b, heads, 1 + n, generator=G) * 3, -1)[:, :, 1:]
    keys = torch.randn(b, 1 + n, dk, generator=G)
    return VisionSignals(hidden=hidden, cls_attn=attn, keys=keys)


# ------------------------------------------------------------------------------------------------- VisionZip


def visionzip_authors(cls_attention, hidden_states, metric, dominant_num, contextual_num):
    """VisionZip's forward, step by step (dominant_num excludes [CLS], as visionzip() passes dominant - 1)."""
    cls_attention_sum = cls_attention.sum(dim=1)
    topk_indices = cls_attention_sum.topk(dominant_num, dim=1).indices + 1
    all_indices = torch.cat([torch.zeros((hidden_states.shape[0], 1), dtype=topk_indices.dtype), topk_indices], dim=1)
    mask = torch.ones_like(hidden_states[:, :, 0], dtype=torch.bool).scatter_(1, all_indices, False)
    dominant_tokens = hidden_states.masked_select(~mask.unsqueeze(-1)).view(hidden_states.shape[0], dominant_num + 1, hidden_states.shape[2])
    metric_filtered = metric[mask].view(hidden_states.shape[0], hidden_states.shape[1] - (dominant_num + 1), metric.shape[2])
    hidden_states_filtered = hidden_states.masked_select(mask.unsqueeze(-1)).view(hidden_states.shape[0], hidden_states.shape[1] - (dominant_num + 1), hidden_states.shape[2])
    metric_normalized = metric_filtered / metric_filtered.norm(dim=-1, keepdim=True)
    step = max(1, metric_normalized.shape[1] // contextual_num)
    target_indices = torch.arange(0, metric_normalized.shape[1], step)[:contextual_num]
    target_tokens = metric_normalized[:, target_indices, :]
    others = ~torch.isin(torch.arange(metric_normalized.shape[1]), target_indices)
    tokens_to_merge = metric_normalized[:, others, :]
    similarity = torch.bmm(tokens_to_merge, target_tokens.transpose(1, 2))
    assign_one_hot = torch.zeros(tokens_to_merge.shape[0], tokens_to_merge.shape[1], contextual_num, dtype=hidden_states_filtered.dtype)
    assign_one_hot.scatter_(2, similarity.argmax(dim=2).unsqueeze(-1), 1)
    counts = assign_one_hot.sum(dim=1).clamp(min=1).unsqueeze(-1)
    hidden_to_merge = hidden_states_filtered[:, others, :]
    aggregated_hidden = torch.bmm(assign_one_hot.transpose(1, 2), hidden_to_merge) / counts
    target_hidden = hidden_states_filtered[:, target_indices, :]
    contextual_tokens = target_hidden + aggregated_hidden
    return torch.cat([dominant_tokens, contextual_tokens], dim=1), all_indices


@pytest.mark.parametrize("keep,contextual", [(16, None), (10, 3), (8, 1)])
def test_visionzip_matches_authors(keep, contextual):
    sig = crafted()
    red = build_reducer("visionzip", keep=keep, contextual=contextual)
    red.check(36)
    mat = red.matrix(sig)
    expected, kept = visionzip_authors(sig.cls_attn, sig.hidden, sig.keys, red.dominant - 1, red.contextual)
    assert torch.allclose(mat @ sig.hidden, expected, atol=1e-5)
    # the dominant rows are one-hot on the authors' kept indices, [CLS] first, in index order
    assert torch.equal(mat[:, : red.dominant].argmax(-1), kept.sort(dim=1).values)
    assert red.contextual == (contextual if contextual is not None else round(keep * 10 / 64))


# ------------------------------------------------------------------------------------------------- PruMerge+


def prumerge_merge_authors(image_features, cls_attn, keys, idx, neighbors):
    """token_prune_merge_advanced_plus after `idx` is chosen: the per-token loop of the authors, batch of one."""
    N, C = image_features.shape[1], image_features.shape[2]
    a = torch.arange(N)
    compl = a[~torch.isin(a, idx[0])][None]
    index = idx.unsqueeze(-1).expand(-1, -1, C)
    x_others = torch.gather(image_features, 1, index)
    x_others_attn = torch.gather(cls_attn, 1, idx)
    Key_others = torch.gather(keys, 1, idx.unsqueeze(-1).expand(-1, -1, keys.shape[-1]))
    non_topk = torch.gather(image_features, 1, compl.unsqueeze(-1).expand(-1, -1, C))
    non_topk_Key = torch.gather(keys, 1, compl.unsqueeze(-1).expand(-1, -1, keys.shape[-1]))
    non_topk_attn = torch.gather(cls_attn, 1, compl)
    Key_others_norm = F.normalize(Key_others, p=2, dim=-1)
    non_topk_Key_norm = F.normalize(non_topk_Key, p=2, dim=-1)
    left = x_others.shape[1]
    updated = torch.zeros_like(x_others)
    for i in range(left):
        key_i = Key_others_norm[0, i][None, None]
        rest_x = torch.cat([x_others[:, :i], x_others[:, i + 1:], non_topk], 1)
        rest_attn = torch.cat([x_others_attn[:, :i], x_others_attn[:, i + 1:], non_topk_attn], 1)
        rest_keys = torch.cat([Key_others_norm[:, :i], Key_others_norm[:, i + 1:], non_topk_Key_norm], 1)
        cos = torch.bmm(key_i, rest_keys.transpose(1, 2))
        _, cluster = torch.topk(cos, k=neighbors, dim=2, largest=True)
        weighted_avg = torch.sum(rest_x[:, cluster.squeeze()] * rest_attn[:, cluster.squeeze()].unsqueeze(-1), dim=1)
        updated[0, i] = x_others[0, i] + weighted_avg
    extra = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1, keepdim=True)
    return torch.cat([updated, extra], 1)


def test_prumerge_merge_matches_authors():
    n, d = 40, 6
    feats = torch.randn(1, n, d, generator=G)
    attn = torch.softmax(torch.randn(1, n, generator=G) * 2, -1)
    keys = torch.randn(1, n, 7, generator=G)
    idx = torch.tensor([[7, 3, 22, 0, 31, 15]])
    ours = prumerge_matrix(attn[0], keys[0], idx[0], neighbors=8) @ feats[0]
    assert torch.allclose(ours, prumerge_merge_authors(feats, attn, keys, idx, 8)[0], atol=1e-5)


def test_prumerge_selection_top_then_spatial():
    n = 36
    attn = torch.zeros(n)
    attn[[5, 17, 30]] = torch.tensor([0.5, 0.3, 0.2])
    sig = VisionSignals(hidden=torch.randn(1, 1 + n, 4), cls_attn=torch.zeros(1, 1, n), keys=torch.randn(1, 1 + n, 3),
                        next_cls_attn=attn[None], next_keys=torch.randn(1, 1 + n, 3))
    red = build_reducer("prumerge_plus", keep=8, neighbors=4)
    red.check(n)
    mat = red.matrix(sig)[0, :, 1:]  # 8 x n
    # keep - 1 = 7: top 4 by attention (5, 17, 30, then the first zero: 0), spatial 3 at centres 6, 18, 30 -> 30
    # taken, replaced by the next-ranked token not taken (1)
    assert mat[:-1].argmax(-1).tolist() == [5, 17, 30, 0, 6, 18, 1]
    assert torch.allclose(mat[-1].sum(), 1 - attn[[5, 17, 30]].sum())  # extra token: the unkept attention mass


def test_prumerge_signal_matches_authors_hooks():
    """The next layer's [CLS] attention: the authors hook q_proj / k_proj outputs and compute softmax(q k^T C^-1/2)."""
    from test_mllm import make_model

    from deco.models.reduction import vision_signals

    model = make_model("linear", seed=2)
    clip = getattr(model.vision.model, "vision_model", model.vision.model)
    out = {}
    layer = clip.encoder.layers[model.vision.layers_used]
    hooks = [layer.self_attn.k_proj.register_forward_hook(lambda m, i, o: out.__setitem__("k", o)),
             layer.self_attn.q_proj.register_forward_hook(lambda m, i, o: out.__setitem__("q", o))]
    pixels = torch.randn(2, 3, 56, 56, generator=G)
    with torch.no_grad():
        model.vision.model(pixel_values=pixels)  # the whole tower, as the authors run it
        for h in hooks:
            h.remove()
        C = model.vision.hidden_size
        attn = F.softmax((out["q"] @ out["k"].transpose(-2, -1)) * C ** -0.5, dim=-1)[:, 0, 1:]
        sig = vision_signals(model.vision, pixels, next_layer=True)
    assert torch.allclose(sig.next_cls_attn, attn, atol=1e-5)
    assert torch.allclose(sig.next_keys, out["k"], atol=1e-5)


# ------------------------------------------------------------------------------------------------- DivPrune


def divprune_authors(visual_feature_vectors, threshold_terms):
    norm_matrix = visual_feature_vectors / visual_feature_vectors.norm(dim=1, keepdim=True)
    cosine_matrix = 1.0 - torch.mm(norm_matrix, norm_matrix.t())
    s = torch.empty(threshold_terms, dtype=torch.long)
    for i in range(threshold_terms):
        m2 = cosine_matrix if i == 0 else torch.index_select(cosine_matrix, 0, torch.index_select(s, 0, torch.arange(0, i)))
        scores = torch.topk(m2, 2, dim=0, largest=False).values[1, :] if i == 0 else torch.min(m2, dim=0).values
        s[i] = torch.argmax(scores)
    return s


@pytest.mark.parametrize("keep", [1, 5, 20])
def test_divprune_matches_authors(keep):
    feats = torch.randn(36, 10, generator=G)
    assert divprune_indices(feats, keep).tolist() == sorted(divprune_authors(feats, keep).tolist())


def test_divprune_reads_projected_tokens():
    sig = crafted(b=1)
    proj = torch.nn.Linear(8, 12)
    red = build_reducer("divprune", keep=6)
    with torch.no_grad():
        mat = red.matrix(sig, project=proj)
        expected = sorted(divprune_authors(proj(sig.hidden[0, 1:]), 6).tolist())
    assert (mat[0].argmax(-1) - 1).tolist() == expected


# ------------------------------------------------------------------------------------------------- pool / FastV


@pytest.mark.parametrize("keep", [1, 4, 9, 16])
def test_pool_is_adaptive_avg_pool2d(keep):
    x = torch.randn(2, 36, 5, generator=G)
    side = int(keep ** 0.5)
    ref = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(2, 5, 6, 6), side).flatten(2).transpose(1, 2)
    assert torch.allclose(pool_matrix(36, keep) @ x, ref, atol=1e-6)


def fastv_authors(last_attention, seq_length, start, length, keep):
    """fastv_kvcache.py at layer K: head mean, the last row, the image span, topk, text kept, sorted."""
    image_attention_score = last_attention.mean(dim=1)[0][-1][start:start + length]
    top = image_attention_score.topk(keep).indices + start
    return torch.cat((torch.arange(start), top, torch.arange(start + length, seq_length))).sort().values


def test_fastv_selection_matches_authors():
    t, start, length = 30, 4, 16
    attn = torch.softmax(torch.randn(1, 4, t, t, generator=G), -1)
    ours = fastv_keep_columns(attn.mean(1)[:, -1], torch.ones(1, t), torch.tensor([start]), length, 5)[0]
    assert torch.equal(ours, fastv_authors(attn, t, start, length, 5))
