"""The token-layout control (issue 24): `permute_tokens` reorders a projector's output tokens by one fixed
permutation, leaves every token's content unchanged, and permutes R_q2i's rows the same way."""

import pytest
import torch

from deco.models.formats.projector_type import projector_type_of
from deco.models.projectors import build_projector
from deco.models.projectors.permuted import PermutedProjector, permute_seed, token_permutation


def pair(name, seed=3, **kwargs):
    """(plain, permuted) projectors with the same weights."""
    torch.manual_seed(0)
    plain = build_projector(name, in_dim=8, out_dim=6, num_patches=16, **kwargs)
    torch.manual_seed(0)
    perm = build_projector(name, in_dim=8, out_dim=6, num_patches=16, permute_tokens=seed, **kwargs)
    return plain.eval(), perm.eval()


def test_permutation_is_a_true_permutation_fixed_by_its_seed():
    p = token_permutation(64, 5)
    assert sorted(p.tolist()) == list(range(64))  # every token once
    assert torch.equal(p, token_permutation(64, 5))  # the seed fixes it
    assert not torch.equal(p, torch.arange(64)) and not torch.equal(p, token_permutation(64, 6))
    # torch's CPU generator, seed 0, 4 tokens: a transcription of torch.randperm's documented determinism
    assert token_permutation(4, 0).tolist() == torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist()


def test_avgpool_tokens_are_the_plain_ones_reordered():
    plain, perm = pair("avgpool", query_num=4, mlp_depth=2)
    assert isinstance(perm, PermutedProjector) and perm.num_tokens() == 4
    assert plain.spatial_tokens and not perm.spatial_tokens  # token k no longer sits at grid cell k
    x = torch.randn(2, 16, 8)
    out, ref = perm(x), plain(x)
    order = perm.perm.tolist()
    for i, j in enumerate(order):  # out[:, i] is the plain token perm[i], bit for bit
        assert torch.equal(out[:, i], ref[:, j])
    # content unchanged: the same multiset of token vectors, only the order differs
    assert torch.equal(out.sort(1).values, ref.sort(1).values)
    assert order != [0, 1, 2, 3]


def test_r_q2i_rows_follow_the_tokens():
    plain, perm = pair("avgpool", query_num=4, mlp_depth=1)
    ref = plain.query_to_patch_relevance()  # 4 x 16: token k averages its 2 x 2 block
    rel = perm.query_to_patch_relevance()
    for i, j in enumerate(perm.perm.tolist()):
        assert torch.equal(rel[i], ref[j])
    # hand computation for one token: the first row of the plain matrix covers patches 0, 1, 4, 5
    assert ref[0].nonzero().flatten().tolist() == [0, 1, 4, 5] and torch.allclose(
        ref[0][[0, 1, 4, 5]], torch.full((4,), 0.25)
    )


def test_qformer_keeps_its_attention_maps_and_permutes_its_tokens():
    plain, perm = pair("qformer", query_num=5, layer_num=1)
    x = torch.randn(1, 16, 8)
    tokens, q_self, q_cross = perm.forward_with_attentions(x)
    ref, r_self, r_cross = plain.forward_with_attentions(x)
    assert torch.allclose(tokens, ref[:, perm.perm]) and torch.allclose(tokens, perm(x))
    assert torch.allclose(q_cross[0], r_cross[0])  # the maps stay in the inner order ...
    rel = perm.query_to_patch_relevance(cross_attns=q_cross)
    assert torch.allclose(
        rel, plain.query_to_patch_relevance(cross_attns=r_cross)[..., perm.perm, :]
    )  # ... R_q2i rows do not


@pytest.mark.parametrize("value,seed", [(None, None), (False, None), (True, 0), (7, 7)])
def test_config_values(value, seed):
    assert permute_seed(value) == seed


def test_bad_config_value_and_export_say_what_is_wrong():
    with pytest.raises(ValueError, match="permute_tokens must be null, true/false or a seed"):
        permute_seed("yes")
    with pytest.raises(ValueError, match="permute_tokens is a deco control"):
        projector_type_of({"name": "avgpool", "query_num": 64, "permute_tokens": 1})
    assert projector_type_of({"name": "avgpool", "query_num": 64, "permute_tokens": None}) == "avgpool2_64"
