"""The generation seam and the static engine, held to the hf reference engine on the tiny Qwen2-VL.

Float32 on the CPU, adapter with random non-zero weights, a left-padded batch: greedy tokens equal
``engine=hf``'s token for token, the recorded log π_old and V(s) equal a separate scoring forward
(≤ 1e-5), the KL reference equals the adapter-disabled scoring forward, sampling is seeded and
follows the distribution it records, and a stop signal ends a generation within a step.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tests.models.test_policy import PLACEHOLDERS, batch_obs, placeholder_ids, randomize_lora
from vldac_lightning.models.engines import DecodeSpec, Generation, GenerationEngine, build_engine
from vldac_lightning.models.engines import static as static_module
from vldac_lightning.models.engines.hf import HFEngine
from vldac_lightning.models.engines.qwen2_decoder import DecoderShape, UnsupportedModel
from vldac_lightning.models.engines.static import StaticEngine
from vldac_lightning.models.sampling import ActionTrie
from vldac_lightning.utils.interrupt import RunInterrupted, stop_request

ACTIONS = ("-", "+", "turn left", "stop now")  # one- and multi-token actions: the trie branches
SAMPLINGS = [{}, {"temperature": 0.7, "top_k": 5}, {"top_p": 0.8}]
SAMPLING_IDS = ["t1", "t0.7-k5", "p0.8"]


def policy_and_enc(make_policy: Callable[..., Any], numberline_obs: list, response_mode: str,
                   max_new_tokens: int = 10, rows: int = 5, **sampling: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    policy = make_policy(response_mode=response_mode, max_new_tokens=max_new_tokens, action_names=ACTIONS,
                         **sampling)
    randomize_lora(policy)
    enc = policy.encode(batch_obs(numberline_obs, rows))
    assert (enc["attention_mask"][1:, 0] == 0).all()  # left padding is exercised
    return policy, enc


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=SAMPLING_IDS)
@pytest.mark.parametrize("response_mode", ["action_only", "json"])
def test_static_greedy_tokens_equal_the_hf_engine(make_policy: Callable[..., Any], numberline_obs: list,
                                                  response_mode: str, sampling: dict) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, response_mode, **sampling)
    policy.engine = HFEngine()
    ids_hf, mask_hf, logp_hf, hidden_hf = policy.generate_scored(enc, do_sample=False)
    policy.engine = StaticEngine(check_every=3)  # R = 10 is not a multiple of it: trimming is exercised
    ids, mask, logp, hidden = policy.generate_scored(enc, do_sample=False)
    assert torch.equal(ids, ids_hf) and torch.equal(mask, mask_hf)
    torch.testing.assert_close(logp, logp_hf, atol=1e-5, rtol=0)
    torch.testing.assert_close(hidden, hidden_hf, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=SAMPLING_IDS)
@pytest.mark.parametrize("response_mode", ["action_only", "json"])
def test_static_sampled_logprobs_and_values_equal_a_scoring_forward(
        make_policy: Callable[..., Any], numberline_obs: list, response_mode: str, sampling: dict) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, response_mode, **sampling)
    policy.engine = StaticEngine()
    torch.manual_seed(0)
    ids, mask, logp, hidden = policy.generate_scored(enc)
    with torch.no_grad():
        scored, values = policy.score(enc, ids, mask, with_values=True)
    assert torch.isfinite(logp).all() and (logp[~mask] == 0).all()
    torch.testing.assert_close(logp[mask], scored[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(policy.value_head(hidden), values, atol=1e-5, rtol=1e-5)


def test_static_sampling_is_seeded(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json")
    policy.engine = StaticEngine()
    runs = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        runs.append(policy.generate_scored(enc))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][2], runs[1][2])
    assert not torch.equal(runs[0][0], runs[2][0])  # 5 rows x 10 tokens: another seed samples otherwise


def test_static_samples_follow_the_recorded_distribution(make_policy: Callable[..., Any],
                                                         numberline_obs: list) -> None:
    """Gumbel-max sampling on the device draws from the distribution it records: 400 draws of a
    two-action choice land within 4 standard deviations of the recorded probability."""
    policy = make_policy(response_mode="action_only", action_names=("-", "+"))
    randomize_lora(policy, scale=0.05)  # keep both actions likely
    policy.engine = StaticEngine()
    enc = policy.encode([numberline_obs[0]] * 400)
    torch.manual_seed(0)
    ids, mask, logp, _ = policy.generate_scored(enc)
    plus = policy.processor.tokenizer.encode("+", add_special_tokens=False)[0]
    first_is_plus = ids[:, 0] == plus
    assert first_is_plus.any() and not first_is_plus.all()
    p_plus = float(logp[first_is_plus][0, 0].exp())  # every row has the same prompt: one distribution
    assert 0.05 < p_plus < 0.95, p_plus  # a real two-way choice
    freq = float(first_is_plus.float().mean())
    assert abs(freq - p_plus) < 4 * (p_plus * (1 - p_plus) / 400) ** 0.5, (freq, p_plus)


def test_static_action_only_samples_are_always_valid_actions(make_policy: Callable[..., Any],
                                                             numberline_obs: list) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, "action_only", rows=8)
    policy.engine = StaticEngine()
    seen = set()
    for seed in range(10):
        torch.manual_seed(seed)
        ids, mask, _, _ = policy.generate_scored(enc)
        texts = policy.decode(ids, mask)
        assert set(texts) <= set(ACTIONS), texts
        last = ids.gather(1, (mask.sum(1, keepdim=True) - 1))
        assert (last == policy.eos_token_id).all()  # every response ends with the end token
        seen |= set(texts)
    assert len(seen) >= 3  # the trie's branches are all reachable, not one forced answer


def test_static_json_sampling_never_emits_multimodal_placeholders(make_policy: Callable[..., Any],
                                                                  numberline_obs: list) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json", max_new_tokens=24, rows=8)
    policy.engine = StaticEngine()
    bad = torch.tensor(placeholder_ids(policy))
    assert len(bad) == len(PLACEHOLDERS)
    for seed in range(5):
        torch.manual_seed(seed)
        ids, _, _, _ = policy.generate_scored(enc)
        assert not torch.isin(ids, bad).any()


@pytest.mark.parametrize("response_mode", ["action_only", "json"])
def test_static_reference_logprobs_equal_the_base_model_scoring(make_policy: Callable[..., Any],
                                                                numberline_obs: list, response_mode: str) -> None:
    policy, _ = policy_and_enc(make_policy, numberline_obs, response_mode)
    policy.engine = StaticEngine()
    obs = batch_obs(numberline_obs, 5)
    torch.manual_seed(0)
    out = policy.act(obs)
    enc = policy.encode(obs)
    with torch.no_grad():
        base, _ = policy.score(enc, out.response_ids, out.response_mask, with_values=False, adapter=False)
    torch.testing.assert_close(out.ref_logprobs, base, atol=1e-5, rtol=0)
    assert (out.ref_logprobs - out.logprobs).abs().max() > 1e-3  # the reference is not the policy
    # ... and the engine is back on the adapter afterwards.
    ids, mask, logp, _ = policy.generate_scored(enc)
    with torch.no_grad():
        scored, _ = policy.score(enc, ids, mask, with_values=False)
    torch.testing.assert_close(logp, scored, atol=1e-5, rtol=0)


def test_static_value_bootstrap_equals_the_forward(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy, _ = policy_and_enc(make_policy, numberline_obs, "action_only")
    obs = batch_obs(numberline_obs, 4)
    expected = policy.value(obs)  # hf engine: a Hugging Face forward
    policy.engine = StaticEngine()
    torch.testing.assert_close(policy.value(obs), expected, atol=1e-5, rtol=1e-5)


def test_static_engine_follows_adapter_updates(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    """Generation uses the adapter as it is now: after an in-place update (what an optimizer step
    does) the merged weights are refreshed, and inside disable_adapter() the base model decodes."""
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json")
    static = StaticEngine()

    def greedy(engine: GenerationEngine) -> tuple[torch.Tensor, torch.Tensor]:
        policy.engine = engine
        ids, _, logp, _ = policy.generate_scored(enc, do_sample=False)
        return ids, logp

    before = greedy(static)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.mul_(-1.5)
    after, after_hf = greedy(static), greedy(HFEngine())
    assert not torch.equal(before[1], after[1])
    assert torch.equal(after[0], after_hf[0])
    torch.testing.assert_close(after[1], after_hf[1], atol=1e-5, rtol=0)
    with policy.model.disable_adapter():
        base, base_hf = greedy(static), greedy(HFEngine())
    assert torch.equal(base[0], base_hf[0])
    torch.testing.assert_close(base[1], base_hf[1], atol=1e-5, rtol=0)


def test_stop_signal_ends_a_static_generation_within_a_step(make_policy: Callable[..., Any], numberline_obs: list,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json", max_new_tokens=40)
    policy.engine = StaticEngine()
    steps = []
    run_step = static_module.DecodeSession.run_step

    def counted(self: Any) -> None:
        steps.append(1)
        if len(steps) == 5:
            stop_request.request(signal.SIGTERM)  # what the signal handler does
        run_step(self)

    monkeypatch.setattr(static_module.DecodeSession, "run_step", counted)
    try:
        with pytest.raises(RunInterrupted):
            policy.generate_scored(enc)
    finally:
        stop_request.clear()
    assert len(steps) == 5  # no decode step after the signal (40 were allowed)


def test_trie_tables_allow_what_the_trie_allows() -> None:
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 12, (int(n),), generator=gen).tolist() + [2]
            for n in torch.randint(1, 5, (12,), generator=gen)]
    trie = ActionTrie(seqs, vocab_size=12, pad_token_id=0)
    support = torch.ones(12, dtype=torch.bool)
    support[7] = False
    tables = trie.tables(12, support, torch.device("cpu"))
    prefixes = [s[:k] for s in seqs for k in range(len(s) + 1)] + [[1], [5, 1, 1], [2, 2]]
    for prefix in prefixes:
        node = torch.zeros(1, dtype=torch.long)
        for tok in prefix:
            node = tables.advance(node, torch.tensor([tok]))
        allowed = torch.isfinite(tables.bias[node[0]])
        expected = trie.mask(torch.tensor([prefix], dtype=torch.long))[0] & support
        assert torch.equal(allowed, expected), prefix


def test_an_unsupported_backbone_names_the_hf_engine() -> None:
    base = SimpleNamespace(config=SimpleNamespace(model_type="llava"))
    with pytest.raises(UnsupportedModel, match="model/engine=hf"):
        DecoderShape.of(base)  # type: ignore[arg-type]


class NoScoresEngine:
    """An external engine (vLLM-like) that returns tokens only: the policy computes the rest."""

    name = "no_scores"

    def generate(self, model: Any, enc: dict[str, torch.Tensor], spec: DecodeSpec, *, do_sample: bool,
                 with_scores: bool) -> Generation:
        out = HFEngine().generate(model, enc, spec, do_sample=do_sample, with_scores=False)
        return Generation(out.response_ids, out.response_mask)


def test_an_engine_without_scores_gets_them_from_the_policy(make_policy: Callable[..., Any],
                                                             numberline_obs: list) -> None:
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json")
    policy.engine = NoScoresEngine()
    assert isinstance(policy.engine, GenerationEngine)
    torch.manual_seed(0)
    ids, mask, logp, hidden = policy.generate_scored(enc)
    with torch.no_grad():
        scored, values = policy.score(enc, ids, mask, with_values=True)
    torch.testing.assert_close(logp, scored, atol=1e-6, rtol=0)
    torch.testing.assert_close(policy.value_head(hidden), values, atol=1e-5, rtol=1e-5)


def test_build_engine_errors_name_the_target() -> None:
    with pytest.raises(ValueError, match="needs a _target_"):
        build_engine({"cuda_graphs": True})
    with pytest.raises(ValueError, match="no_such_module.Engine"):
        build_engine({"_target_": "no_such_module.Engine"})
    with pytest.raises(ValueError, match="has no name and generate"):
        build_engine({"_target_": "collections.OrderedDict"})
    assert build_engine(None).name == "hf"


def test_sharded_decoder_weights_name_the_hf_engine(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    """What FSDP leaves in a module between forwards (a flat shard) is refused with the fix, not
    multiplied into garbage."""
    policy, enc = policy_and_enc(make_policy, numberline_obs, "json")
    proj = policy.model.get_base_model().model.language_model.layers[0].self_attn.k_proj.get_base_layer()
    proj.weight = torch.nn.Parameter(proj.weight.detach().flatten()[: proj.weight.numel() // 2].clone(),
                                     requires_grad=False)
    policy.engine = StaticEngine()
    with pytest.raises(UnsupportedModel, match="model/engine=hf"):
        policy.generate_scored(enc)


def test_reference_pass_reuses_the_vision_tower_when_it_has_no_adapter(tiny_model_cfg: Any,
                                                                        numberline_obs: list) -> None:
    """LoRA on the language model only (as for real checkpoints): the vision tower's output does not
    depend on the adapter, so ``act`` runs it once for the policy's and the reference's passes, and
    the reference log-probs still equal the adapter-disabled scoring forward."""
    from omegaconf import OmegaConf

    from vldac_lightning.models.loading import apply_lora, load_backbone
    from vldac_lightning.models.policy import VLMPolicy
    from vldac_lightning.models.sampling import SamplingConfig

    cfg = OmegaConf.create(OmegaConf.to_container(tiny_model_cfg, resolve=True))
    cfg.lora.target_modules = r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    backbone, processor = load_backbone(cfg)
    policy = VLMPolicy(apply_lora(backbone, cfg.lora), processor, value_hidden_sizes=[16],
                       sampling=SamplingConfig(max_new_tokens=6), response_mode="json",
                       engine=StaticEngine()).eval()
    randomize_lora(policy)
    calls = []
    visual = policy.model.get_base_model().model.visual
    handle = visual.register_forward_hook(lambda *_: calls.append(1))
    obs = batch_obs(numberline_obs, 4)
    try:
        torch.manual_seed(0)
        out = policy.act(obs)
        assert len(calls) == 1  # one vision pass for both the policy's and the reference's prefill
        enc = policy.encode(obs)
        with torch.no_grad():
            base, _ = policy.score(enc, out.response_ids, out.response_mask, with_values=False, adapter=False)
            scored, _ = policy.score(enc, out.response_ids, out.response_mask, with_values=False)
    finally:
        handle.remove()
    torch.testing.assert_close(out.ref_logprobs, base, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.logprobs, scored, atol=1e-5, rtol=0)
