"""Generation through merged LoRA weights: same function as the unmerged model, the frozen base put
back bit for bit (also in bf16, where subtract-to-unmerge would not), and the policy's records
still equal a separate unmerged scoring forward."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from tests.models.test_policy import batch_obs, randomize_lora
from vldac_lightning.models.engines.hf import HFEngine
from vldac_lightning.models.lora_merge import lora_merged, mergeable_lora_layers


def base_weights(policy: Any) -> dict[str, torch.Tensor]:
    return {n: p for n, p in policy.model.named_parameters() if "lora_" not in n}


def logits(policy: Any, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return policy.model(**enc, use_cache=False).logits.float()


def test_merged_model_is_the_same_function_and_the_base_comes_back(make_policy: Callable[..., Any],
                                                                     numberline_obs: list) -> None:
    policy = make_policy(response_mode="json")
    randomize_lora(policy)
    enc = policy.encode(batch_obs(numberline_obs))
    before = {n: (p, p.detach().clone()) for n, p in base_weights(policy).items()}
    unmerged = logits(policy, enc)
    with torch.no_grad(), policy.model.disable_adapter():
        base_only = logits(policy, enc)
    assert (unmerged - base_only).abs().max() > 1e-3  # the adapter matters here
    with lora_merged(policy.model) as merged:
        assert merged
        inside = logits(policy, enc)
    torch.testing.assert_close(inside, unmerged, atol=1e-5, rtol=1e-5)
    after = base_weights(policy)
    for name, (param, value) in before.items():
        assert after[name] is param and torch.equal(param, value), name  # same object, same bits
    torch.testing.assert_close(logits(policy, enc), unmerged, atol=0, rtol=0)  # the adapter branch is back


def test_bf16_base_is_restored_bit_for_bit_every_time(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy = make_policy(response_mode="json").to(torch.bfloat16)
    randomize_lora(policy)
    enc = policy.encode(batch_obs(numberline_obs))
    snapshot = {n: p.detach().clone() for n, p in base_weights(policy).items()}
    for _ in range(3):
        with lora_merged(policy.model) as merged:
            assert merged
            logits(policy, enc)
    # peft's merge_adapter() + unmerge_adapter() would leave (W + ΔW) − ΔW ≠ W here.
    assert all(torch.equal(p, snapshot[n]) for n, p in base_weights(policy).items())


def test_an_error_inside_still_restores_the_base(make_policy: Callable[..., Any]) -> None:
    policy = make_policy(response_mode="json")
    randomize_lora(policy)
    params = dict(base_weights(policy))
    with pytest.raises(RuntimeError, match="boom"), lora_merged(policy.model):
        raise RuntimeError("boom")
    assert all(base_weights(policy)[n] is p for n, p in params.items())
    assert all(not m.disable_adapters for m in mergeable_lora_layers(policy.model) or [])


def test_an_already_merged_adapter_is_left_alone(make_policy: Callable[..., Any]) -> None:
    policy = make_policy(response_mode="json")
    policy.model.merge_adapter()
    with lora_merged(policy.model) as merged:
        assert not merged


@pytest.mark.parametrize("response_mode", ["action_only", "json"])
def test_policy_generating_merged_records_what_unmerged_scoring_computes(
    make_policy: Callable[..., Any], numberline_obs: list, response_mode: str,
) -> None:
    policy = make_policy(response_mode=response_mode, max_new_tokens=6,
                         action_names=("-", "+", "turn left", "stop now"))
    randomize_lora(policy)
    assert mergeable_lora_layers(policy.model) is not None  # the merged path is the one taken below
    obs = batch_obs(numberline_obs, 5)
    torch.manual_seed(0)
    plain = policy.act(obs)
    policy.engine = HFEngine(merge_lora=True)
    torch.manual_seed(0)
    out = policy.act(obs)
    # Same distribution up to float32 rounding, same random stream: the same samples.
    assert torch.equal(out.response_ids, plain.response_ids)
    enc = policy.encode(obs)
    with torch.no_grad():
        scored, values = policy.score(enc, out.response_ids, out.response_mask, with_values=True)
    torch.testing.assert_close(out.logprobs, scored, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.values, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.ref_logprobs, plain.ref_logprobs, atol=1e-6, rtol=0)
