"""The one sampling distribution (mask → temperature → top-k → top-p), hand-computed."""

from __future__ import annotations

import math

import pytest
import torch

from vldac_lightning.models.sampling import (
    ActionTrie,
    PolicyLogitsProcessor,
    SamplingConfig,
    filter_logits,
    token_logprobs,
)

NEG_INF = float("-inf")


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits).nonzero().flatten().tolist()


# ------------------------------------------------------------------------------ SamplingConfig
@pytest.mark.parametrize(
    "kwargs, key",
    [({"temperature": 0.0}, "temperature"), ({"top_k": -1}, "top_k"), ({"top_p": 0.0}, "top_p"),
     ({"top_p": 1.5}, "top_p"), ({"max_new_tokens": 0}, "max_new_tokens")],
)
def test_sampling_config_rejects_bad_values_naming_the_key(kwargs: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        SamplingConfig(**kwargs)


# ------------------------------------------------------------------------------ filter_logits
def test_defaults_change_nothing_but_dtype() -> None:
    logits = torch.tensor([[1.5, -2.0, 0.25]], dtype=torch.bfloat16)
    out = filter_logits(logits, SamplingConfig())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, logits.float(), rtol=0, atol=0)


def test_temperature_two_halves_the_logits() -> None:
    out = filter_logits(torch.tensor([2.0, -4.0, 0.0, 7.0]), SamplingConfig(temperature=2.0))
    torch.testing.assert_close(out, torch.tensor([1.0, -2.0, 0.0, 3.5]), rtol=0, atol=0)


def test_top_k_two_keeps_exactly_the_two_largest() -> None:
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0, -1.0], [9.0, -3.0, -2.0, 8.5, 0.0]])
    out = filter_logits(logits, SamplingConfig(top_k=2))
    assert kept(out[0]) == [1, 2] and kept(out[1]) == [0, 3]
    torch.testing.assert_close(out[0, [1, 2]], torch.tensor([3.0, 2.0]))  # kept logits untouched
    assert (torch.isfinite(out).sum(-1) == 2).all()


def test_top_p_keeps_smallest_prefix_reaching_p() -> None:
    # Probabilities 0.15, 0.50, 0.10, 0.25 (deliberately unsorted). Sorted: 0.50, 0.25, 0.15, 0.10
    # with cumulative mass 0.50, 0.75, 0.90, 1.00.
    probs = torch.tensor([0.15, 0.50, 0.10, 0.25])
    logits = probs.log()
    # p = 0.7: 0.50 < 0.7 <= 0.75 -> keep {0.50, 0.25} = indices 1 and 3; renormalised 2/3, 1/3.
    out = filter_logits(logits, SamplingConfig(top_p=0.7))
    assert kept(out) == [1, 3]
    torch.testing.assert_close(torch.softmax(out, -1), torch.tensor([0.0, 2 / 3, 0.0, 1 / 3]))
    # p = 0.8: 0.75 < 0.8 <= 0.90 -> the 0.15 token (index 0) joins.
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.8))) == [0, 1, 3]
    # p = 0.3: the top token alone already reaches it (and the top token is always kept).
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.3))) == [1]
    # p = 0.95: all four are needed.
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.95))) == [0, 1, 2, 3]


def test_top_p_applies_to_the_tempered_distribution() -> None:
    # At temperature 2 the probabilities become sqrt(p)/sum = 0.3701, 0.2617, 0.2027, 0.1655
    # (cumulative 0.3701, 0.6318, 0.8345): top_p=0.7 now needs three tokens, not two.
    logits = torch.tensor([0.50, 0.25, 0.15, 0.10]).log()
    assert kept(filter_logits(logits, SamplingConfig(top_p=0.7))) == [0, 1]
    assert kept(filter_logits(logits, SamplingConfig(temperature=2.0, top_p=0.7))) == [0, 1, 2]


def test_constraint_mask_comes_before_top_k() -> None:
    logits = torch.tensor([5.0, 1.0, 3.0, 0.0])
    allowed = torch.tensor([False, True, True, True])
    # Without the constraint top-1 would keep index 0; with it, the best *allowed* token survives
    # (top-k first would leave nothing at all).
    out = filter_logits(logits, SamplingConfig(top_k=1), allowed)
    assert kept(out) == [2]
    out = filter_logits(logits, SamplingConfig(), allowed)
    assert kept(out) == [1, 2, 3]
    # log-probs renormalise over the allowed set: log(e^1 / (e^1 + e^3 + e^0)).
    expected = 1.0 - math.log(math.e + math.e**3 + 1.0)
    assert torch.log_softmax(out, -1)[1].item() == pytest.approx(expected, abs=1e-6)


# ------------------------------------------------------------------------------ ActionTrie
EOS, PAD, V = 2, 0, 16
# "turn left" = [10, 11], "turn right" = [10, 12], "stop" = [13]; every response ends with EOS.
ACTIONS = {"turn left": [10, 11, EOS], "turn right": [10, 12, EOS], "stop": [13, EOS]}


@pytest.fixture
def trie() -> ActionTrie:
    return ActionTrie(list(ACTIONS.values()), vocab_size=V, pad_token_id=PAD)


def test_trie_allowed_sets(trie: ActionTrie) -> None:
    assert trie.max_len == 3
    assert sorted(trie.allowed([])) == [10, 13]
    assert sorted(trie.allowed([10])) == [11, 12]
    assert trie.allowed([10, 11]) == [EOS]
    assert trie.allowed([13]) == [EOS]
    assert trie.allowed([13, EOS]) == [PAD]  # complete response: only padding follows
    assert trie.allowed([13, EOS, PAD]) == [PAD]
    assert trie.allowed([7]) == [PAD]  # off-trie prefix


def test_trie_masks_and_response_masks(trie: ActionTrie) -> None:
    m = trie.mask(torch.tensor([[10], [13]]))
    assert m.shape == (2, V) and m.dtype == torch.bool
    assert kept(torch.where(m[0], 0.0, NEG_INF)) == [11, 12]
    assert kept(torch.where(m[1], 0.0, NEG_INF)) == [EOS]
    responses = torch.tensor([[10, 12, EOS], [13, EOS, PAD]])
    rm = trie.response_masks(responses)
    assert rm.shape == (2, 3, V)
    expected = [[[10, 13], [11, 12], [EOS]], [[10, 13], [EOS], [PAD]]]
    for b in range(2):
        for j in range(3):
            assert rm[b, j].nonzero().flatten().tolist() == expected[b][j], (b, j)
    # Every actual response token is inside its own mask (what makes scoring finite).
    assert rm.gather(-1, responses.unsqueeze(-1)).all()


def test_trie_masks_of_a_large_mixed_batch_match_the_allowed_sets(trie: ActionTrie) -> None:
    # Masks are written for the whole batch at once: every row must still get exactly its own set.
    prefixes = [[10], [13], [7], [10, 11], [13, EOS], [10, 12]] * 40
    ids = torch.tensor([p + [PAD] * (2 - len(p)) for p in prefixes])
    m = trie.mask(torch.tensor([p[:1] for p in prefixes]))
    rm = trie.response_masks(ids)
    assert m.shape == (len(prefixes), V) and rm.shape == (len(prefixes), 2, V)
    for b, p in enumerate(prefixes):
        assert m[b].nonzero().flatten().tolist() == sorted(trie.allowed(p[:1])), b
        for j in range(2):
            assert rm[b, j].nonzero().flatten().tolist() == sorted(trie.allowed(ids[b, :j].tolist())), (b, j)
    assert trie.mask(torch.zeros(3, 0, dtype=torch.long)).sum(1).tolist() == [2, 2, 2]  # empty prefix: the roots


def test_trie_rejects_empty() -> None:
    with pytest.raises(ValueError):
        ActionTrie([], vocab_size=V, pad_token_id=PAD)


def test_processor_constrains_sampling_to_the_trie(trie: ActionTrie) -> None:
    """Step-by-step sampling through PolicyLogitsProcessor from random logits yields only actions."""
    gen = torch.Generator().manual_seed(0)
    prompt = torch.tensor([[5, 6, 7], [5, 6, 7]])
    proc = PolicyLogitsProcessor(SamplingConfig(temperature=3.0), prompt_length=prompt.shape[1], trie=trie)
    seen = set()
    for _ in range(40):
        ids = prompt.clone()
        for _ in range(trie.max_len):
            scores = proc(ids, torch.randn(2, V, generator=gen) * 4)
            nxt = torch.multinomial(torch.softmax(scores, -1), 1, generator=gen)
            ids = torch.cat([ids, nxt], 1)
        for row in ids[:, 3:].tolist():
            end = row.index(EOS) + 1
            assert row[:end] in ACTIONS.values(), row
            assert all(t == PAD for t in row[end:])
            seen.add(tuple(row[:end]))
    assert len(seen) == 3  # all three actions are reachable


# ------------------------------------------------------------------------------ token_logprobs
def test_token_logprobs_matches_hand_computation() -> None:
    logits = torch.tensor([[[2.0, 0.0, -2.0, 1.0], [0.0, 0.0, 0.0, 0.0]]])  # [B=1, R=2, V=4]
    ids = torch.tensor([[3, 2]])
    out = token_logprobs(logits, ids, SamplingConfig(temperature=2.0))
    # T=2: [1, 0, -1, 0.5] -> log(e^.5 / (e + 1 + e^-1 + e^.5)); uniform row -> log(1/4).
    z = math.e + 1 + math.exp(-1) + math.exp(0.5)
    torch.testing.assert_close(out, torch.tensor([[0.5 - math.log(z), -math.log(4)]]))


def test_token_logprobs_never_nan_on_padding() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 8, requires_grad=True)
    ids = torch.tensor([[3, 1, 0, 0], [5, 0, 0, 0]])  # padded with id 0 after the responses
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.float32)
    # top_k=1: the padding token is almost surely outside the support (-inf log-prob).
    cfg = SamplingConfig(top_k=1)
    raw = torch.log_softmax(filter_logits(logits, cfg), -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    assert torch.isinf(raw[mask == 0]).any()  # the hazard is real in this example
    out = token_logprobs(logits, ids, cfg)
    assert torch.isfinite(out).all()
    loss = -(out * mask).sum()
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_token_logprobs_with_trie_masks_scores_padding_as_zero(trie: ActionTrie) -> None:
    torch.manual_seed(1)
    responses = torch.tensor([[13, EOS, PAD], [10, 11, EOS]])
    logits = torch.randn(2, 3, V)
    out = token_logprobs(logits, responses, SamplingConfig(), trie.response_masks(responses))
    assert torch.isfinite(out).all()
    assert out[0, 1] == 0.0 and out[0, 2] == 0.0 and out[1, 2] == 0.0  # forced tokens: log 1
    # First token of "turn left": log softmax over the two allowed first tokens {10, 13}.
    expected = logits[1, 0, 10] - torch.logsumexp(logits[1, 0, [10, 13]], 0)
    assert out[1, 0].item() == pytest.approx(expected.item(), abs=1e-6)
    assert out[1, 0] < 0
