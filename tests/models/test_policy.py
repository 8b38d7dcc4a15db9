"""VLMPolicy on the real (tiny) Qwen2-VL: sampled == scored distribution, token alignment, stop-grad,
adapter-disabled reference, and the ``source: pretrained`` loading route."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf

from vldac_lightning.models.loading import load_backbone, save_backbone
from vldac_lightning.models.tiny import build_tiny_qwen2_vl

PLACEHOLDERS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def batch_obs(numberline_obs: list[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """n observations; the first has a longer prompt, so the batch is left-padded."""
    out = [dict(numberline_obs[i % len(numberline_obs)]) for i in range(n)]
    out[0]["text"] = out[0]["text"] + " Previous actions: + - + -"
    return out


def placeholder_ids(policy: Any) -> list[int]:
    return policy.processor.tokenizer.convert_tokens_to_ids(list(PLACEHOLDERS))


class ScoreCapture:
    """Wraps ``policy.model.generate`` so the processed scores of *the call VLMPolicy.generate makes*
    (its logits processor, its kwargs) are recorded: they are the distribution actually sampled."""

    def __init__(self, policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.scores: torch.Tensor | None = None
        self.sequences: torch.Tensor | None = None
        original = policy.model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            wants_dict = kwargs.get("return_dict_in_generate", False)
            out = original(*args, **{**kwargs, "output_scores": True, "return_dict_in_generate": True})
            self.scores = torch.stack(out.scores, dim=1).float()  # [B, R, V]
            self.sequences = out.sequences
            return out if wants_dict else out.sequences

        monkeypatch.setattr(policy.model, "generate", generate)


def sample_clean(policy: Any, enc: dict[str, torch.Tensor], seeds: range = range(20)) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample once (kept as a loop so a placeholder regression shows up as a clear assertion)."""
    bad = torch.tensor(placeholder_ids(policy))
    for seed in seeds:
        torch.manual_seed(seed)
        response, mask = policy.generate(enc)
        if not torch.isin(response, bad).any():
            return response, mask
    raise AssertionError("every sample contained a multimodal placeholder token")


# ------------------------------------------------------------------------------ sampled == scored
@pytest.mark.parametrize("response_mode", ["action_only", "json"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.7, "top_k": 5}], ids=["t1", "t0.7-k5"])
def test_scored_logprobs_equal_the_sampling_distribution(
    make_policy: Callable[..., Any], numberline_obs: list, monkeypatch: pytest.MonkeyPatch,
    response_mode: str, sampling: dict,
) -> None:
    policy = make_policy(response_mode=response_mode, max_new_tokens=6,
                         action_names=("-", "+", "turn left", "stop now"), **sampling)
    capture = ScoreCapture(policy, monkeypatch)
    enc = policy.encode(batch_obs(numberline_obs))
    assert (enc["attention_mask"][1:, 0] == 0).all()  # left padding is exercised
    response, mask = sample_clean(policy, enc)
    assert capture.scores is not None and capture.scores.shape[:2] == response.shape
    sampled = torch.log_softmax(capture.scores, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    assert torch.isfinite(sampled[mask]).all()  # every sampled token lies in the sampled support
    scored, _ = policy.score(enc, response, mask, with_values=False)
    torch.testing.assert_close(scored[mask], sampled[mask], atol=1e-5, rtol=0)
    assert (scored[~mask] == 0).all()


def test_scoring_at_temperature_one_would_differ(make_policy: Callable[..., Any], numberline_obs: list,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The reference bug (sample at T<1, score at T=1) is detectable by the check above."""
    policy = make_policy(response_mode="json", max_new_tokens=4, temperature=0.7)
    capture = ScoreCapture(policy, monkeypatch)
    enc = policy.encode(batch_obs(numberline_obs))
    response, mask = sample_clean(policy, enc)
    sampled = torch.log_softmax(capture.scores, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    policy.sampling = type(policy.sampling)(temperature=1.0, max_new_tokens=4)
    at_t1, _ = policy.score(enc, response, mask, with_values=False)
    assert (at_t1[mask] - sampled[mask]).abs().max() > 1e-3


# ------------------------------------------------------------------------------ every token scored
def test_every_response_token_is_scored_action_only(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    actions = ("-", "+", "turn left", "move forward")
    policy = make_policy(response_mode="action_only", action_names=actions, temperature=3.0)
    tok = policy.processor.tokenizer
    torch.manual_seed(0)
    out = policy.act(batch_obs(numberline_obs, 8))
    lengths = out.response_mask.sum(1).tolist()
    for text, n, ids in zip(out.texts, lengths, out.response_ids):
        assert text in actions
        assert n == len(tok.encode(text, add_special_tokens=False)) + 1  # the action tokens + the end token
        assert ids[n - 1] == policy.eos_token_id
    # The first response token carries a real log-prob (the reference code dropped it).
    assert (out.logprobs[:, 0] < 0).all()
    assert torch.isfinite(out.logprobs).all() and (out.logprobs[~out.response_mask] == 0).all()
    assert len(set(out.texts)) > 1  # temperature 3 over 4 actions: not stuck on one answer


def test_every_response_token_is_scored_json(make_policy: Callable[..., Any], numberline_obs: list,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_policy(response_mode="json", max_new_tokens=6)
    capture = ScoreCapture(policy, monkeypatch)
    enc = policy.encode(batch_obs(numberline_obs))
    response, mask = sample_clean(policy, enc)
    generated = capture.sequences[:, enc["input_ids"].shape[1]:]
    for row, m in zip(generated.tolist(), mask):
        # generated length incl. the end token (or all max_new_tokens when no end token came)
        n = row.index(policy.eos_token_id) + 1 if policy.eos_token_id in row else len(row)
        assert int(m.sum()) == n
    logp, _ = policy.score(enc, response, mask, with_values=False)
    assert (logp[mask] < 0).all()  # full-vocabulary sampling: no token, the first included, has log-prob 0
    # Alignment against a plain full forward: position P-1+j predicts response token j.
    P = enc["input_ids"].shape[1]
    with torch.no_grad():
        full = policy.model(**{**enc, "input_ids": torch.cat([enc["input_ids"], response], 1),
                               "attention_mask": torch.cat([enc["attention_mask"], mask.long()], 1),
                               "mm_token_type_ids": torch.cat([enc["mm_token_type_ids"],
                                                               torch.zeros_like(response)], 1)}).logits
    # The response support excludes the multimodal placeholders (never valid response tokens).
    logits = full[:, P - 1:-1].float().masked_fill(~policy.support[: full.shape[-1]], float("-inf"))
    manual = torch.log_softmax(logits, -1).gather(-1, response.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(logp[mask], manual[mask], atol=1e-5, rtol=0)


def test_action_only_samples_are_always_valid_actions(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    actions = ("-", "+", "turn left", "stop")
    policy = make_policy(response_mode="action_only", action_names=actions, temperature=5.0)
    enc = policy.encode([numberline_obs[i % 3] for i in range(50)])
    torch.manual_seed(0)
    response, mask = policy.generate(enc)
    texts = policy.decode(response, mask)
    assert len(texts) == 50
    assert set(texts) <= set(actions), set(texts) - set(actions)
    assert len(set(texts)) >= 3


def test_json_sampling_never_emits_multimodal_placeholders(make_policy: Callable[..., Any],
                                                           numberline_obs: list) -> None:
    policy = make_policy(response_mode="json", max_new_tokens=8)
    bad = torch.tensor(placeholder_ids(policy))
    obs = [numberline_obs[i % 3] for i in range(16)]
    for seed in range(4):
        torch.manual_seed(seed)
        out = policy.act(obs)  # a sampled <|image_pad|> would make the scoring forward raise
        assert not torch.isin(out.response_ids[out.response_mask], bad).any()


# ------------------------------------------------------------------------------ act == score (no extra forward)
def randomize_lora(policy: Any, seed: int = 0, scale: float = 0.3) -> None:
    """Give the adapter non-zero weights, so 'with adapter' and 'base model' differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("response_mode,sampling", [
    ("action_only", {}), ("json", {}), ("json", {"temperature": 0.7, "top_k": 5, "top_p": 0.9}),
], ids=["action_only", "json-t1", "json-t0.7-k5-p0.9"])
def test_act_logprobs_and_values_equal_the_scoring_forward(
    make_policy: Callable[..., Any], numberline_obs: list, response_mode: str, sampling: dict,
) -> None:
    """π_old from generate's own scores and V from the captured prefill state equal a separate forward."""
    policy = make_policy(response_mode=response_mode, max_new_tokens=6,
                         action_names=("-", "+", "turn left", "stop now"), **sampling)
    randomize_lora(policy)
    obs = batch_obs(numberline_obs, 5)
    torch.manual_seed(0)
    out = policy.act(obs)
    assert not policy.training  # eval semantics: no dropout while acting
    enc = policy.encode(obs)
    with torch.no_grad():
        scored, values = policy.score(enc, out.response_ids, out.response_mask, with_values=True)
        ref, _ = policy.score(enc, out.response_ids, out.response_mask, with_values=False, adapter=False)
    mask = out.response_mask
    torch.testing.assert_close(out.logprobs, scored, atol=1e-5, rtol=0)
    assert (out.logprobs[~mask] == 0).all() and (out.logprobs[:, 0] < 0).all()  # a forced end token may be 0
    torch.testing.assert_close(out.values, values, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.values, policy.value(obs), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.ref_logprobs, ref, atol=1e-5, rtol=0)
    assert (out.ref_logprobs - out.logprobs)[mask].abs().max() > 1e-3  # the adapter matters here


def test_recorded_logprobs_are_generates_own_scores(make_policy: Callable[..., Any], numberline_obs: list,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """What act records while sampling == log-softmax of the processed scores generate sampled from."""
    # Actions of different token lengths: shorter responses are padded after their end token.
    policy = make_policy(response_mode="action_only", temperature=3.0, top_k=3,
                         action_names=("-", "+", "turn left", "stop now"))
    capture = ScoreCapture(policy, monkeypatch)
    torch.manual_seed(0)
    out = policy.act(batch_obs(numberline_obs, 8))
    assert capture.scores is not None and capture.scores.shape[1] == out.response_ids.shape[1]
    sampled = torch.log_softmax(capture.scores, -1).gather(-1, out.response_ids.unsqueeze(-1)).squeeze(-1)
    mask = out.response_mask
    assert (mask.sum(1) < mask.shape[1]).any()  # some responses ended early: padding is exercised
    torch.testing.assert_close(out.logprobs[mask], sampled[mask], atol=1e-6, rtol=0)


def test_cached_encodings_rebatch_to_the_processor_output(make_policy: Callable[..., Any],
                                                          numberline_obs: list) -> None:
    """split → collate of any subset reproduces encode() of that subset exactly (no processor needed)."""
    policy = make_policy(response_mode="action_only")
    obs = batch_obs(numberline_obs, 6)  # prompts of two lengths: padding differs per subset
    enc = policy.encode(obs)
    parts = policy.split(enc)
    assert parts is not None and len(parts) == 6
    assert all(p["attention_mask"].all() for p in parts)  # unpadded
    for subset in ([0, 1, 2, 3, 4, 5], [3, 0, 5], [2, 4]):
        expected = policy.encode([obs[i] for i in subset])
        got = policy.collate([parts[i] for i in subset])
        assert got.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0, msg=f"{key} differs")

    class Record:  # what encode_steps reads from a rollout's StepRecord
        def __init__(self, o: dict, e: dict | None) -> None:
            self.obs, self.encoded = o, e

    for records in ([Record(obs[i], parts[i]) for i in (5, 1)], [Record(obs[i], None) for i in (5, 1)]):
        got = policy.encode_steps(records)
        expected = policy.encode([obs[5], obs[1]])
        for key in expected:
            torch.testing.assert_close(got[key], expected[key], atol=0, rtol=0)


def test_cached_pixels_in_bf16_score_like_the_processor_output(make_policy: Callable[..., Any],
                                                               numberline_obs: list) -> None:
    """A bf16 model keeps cached pixels in bf16 (half the memory) and scores them exactly as fresh inputs."""
    policy = make_policy(response_mode="action_only")
    policy.model.to(torch.bfloat16)
    obs = batch_obs(numberline_obs, 4)
    enc = policy.encode(obs)
    parts = policy.split(enc)
    assert parts is not None and all(p["pixel_values"].dtype == torch.bfloat16 for p in parts)
    torch.manual_seed(0)
    response, mask = policy.generate(enc)
    with torch.no_grad():
        fresh, v_fresh = policy.score(enc, response, mask)
        cached, v_cached = policy.score(policy.collate(parts), response, mask)
    torch.testing.assert_close(cached, fresh, atol=0, rtol=0)
    torch.testing.assert_close(v_cached, v_fresh, atol=0, rtol=0)


def test_frame_cache_gives_the_processor_output(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    """Per-frame memoised image processing == the stock processor, for repeated frames and history windows."""
    import numpy as np

    policy = make_policy(response_mode="action_only")
    f = [o["images"][0] for o in numberline_obs]
    text = numberline_obs[0]["text"]
    # Two-frame history windows sharing frames, a repeated window, and a single-frame prompt.
    obs = [{"images": np.stack([f[0], f[1]]), "text": text}, {"images": np.stack([f[1], f[2]]), "text": text},
           {"images": np.stack([f[0], f[1]]), "text": text + " again"}, {"images": f[2][None], "text": text}]
    cache = policy.frame_cache
    assert cache is not None
    policy.frame_cache = None
    expected = [policy.encode(obs), policy.encode(obs[1:3])]
    policy.frame_cache = cache
    for _ in range(2):  # cold, then warm
        for batch, want in zip((obs, obs[1:3]), expected):
            got = policy.encode(batch)
            assert got.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key], atol=0, rtol=0, msg=f"{key} differs")
    assert cache.misses == 3  # three distinct frames, each processed once
    assert cache.hits > 0
    assert "_process_images" not in vars(policy.processor)  # the processor is left stock

    small = type(cache)(max_bytes=1)  # evicts down to one entry, still correct
    policy.frame_cache = small
    for key, value in policy.encode(obs).items():
        torch.testing.assert_close(value, expected[0][key], atol=0, rtol=0)
    assert len(small.entries) == 1


# ------------------------------------------------------------------------------ value head
def test_value_is_read_at_the_last_prompt_token(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy = make_policy(response_mode="action_only")
    obs = batch_obs(numberline_obs)
    enc = policy.encode(obs)
    torch.manual_seed(0)
    response, mask = policy.generate(enc)
    with torch.no_grad():
        _, v_scored = policy.score(enc, response, mask)
    v_prompt = policy.value(obs)
    assert v_scored.shape == (3,)
    torch.testing.assert_close(v_scored, v_prompt, atol=1e-5, rtol=0)


def test_value_loss_reaches_only_the_value_head(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy = make_policy(response_mode="action_only").train()
    enc = policy.encode(batch_obs(numberline_obs))
    torch.manual_seed(0)
    response, mask = policy.generate(enc)
    logp, values = policy.score(enc, response, mask)
    assert logp.requires_grad and values.requires_grad
    (0.5 * (values - 1.0) ** 2).mean().backward()
    for name, p in policy.model.named_parameters():
        assert p.grad is None or not p.grad.any(), f"value loss leaked into {name}"
    head = list(policy.value_head.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head)

    policy.zero_grad(set_to_none=True)
    logp, values = policy.score(enc, response, mask)
    (-(logp * mask).sum()).backward()
    lora_b = {n: p for n, p in policy.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.requires_grad for p in lora_b.values())
    no_grad = [n for n, p in lora_b.items() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"policy loss gives no gradient to {no_grad}"
    assert all(p.grad is None or not p.grad.any() for p in policy.value_head.parameters())
    frozen = [n for n, p in policy.model.named_parameters() if "lora_" not in n and p.requires_grad]
    assert not frozen, f"backbone weights are trainable: {frozen[:3]}"


# ------------------------------------------------------------------------------ KL reference
def test_reference_logprobs_are_the_base_model(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy = make_policy(response_mode="action_only", action_names=("-", "+", "turn left", "stop"))
    enc = policy.encode(batch_obs(numberline_obs))
    torch.manual_seed(0)
    response, mask = policy.generate(enc)
    with torch.no_grad():
        base, _ = policy.score(enc, response, mask, with_values=False)  # LoRA B = 0: the base model
        gen = torch.Generator().manual_seed(0)
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        adapted, _ = policy.score(enc, response, mask, with_values=False)
        ref, _ = policy.score(enc, response, mask, with_values=False, adapter=False)
        adapted_again, _ = policy.score(enc, response, mask, with_values=False)
    torch.testing.assert_close(ref, base, atol=1e-5, rtol=0)
    assert (adapted[mask] - base[mask]).abs().max() > 1e-3  # the adapter is non-trivial
    torch.testing.assert_close(adapted_again, adapted, atol=0, rtol=0)  # adapter re-enabled afterwards

    torch.manual_seed(1)
    out = policy.act(batch_obs(numberline_obs))
    with torch.no_grad():
        enc2 = policy.encode(batch_obs(numberline_obs))
        ref2, _ = policy.score(enc2, out.response_ids, out.response_mask, with_values=False, adapter=False)
    torch.testing.assert_close(out.ref_logprobs, ref2, atol=1e-5, rtol=0)
    assert (out.ref_logprobs - out.logprobs).abs().max() > 1e-3


def test_kl_reference_old_uses_the_sampling_logprobs(make_policy: Callable[..., Any], numberline_obs: list) -> None:
    policy = make_policy(response_mode="action_only", kl_reference="old")
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.05)
    torch.manual_seed(0)
    out = policy.act(batch_obs(numberline_obs))
    torch.testing.assert_close(out.ref_logprobs, out.logprobs, atol=0, rtol=0)


# ------------------------------------------------------------------------------ pretrained route
def test_saved_tiny_backbone_loads_as_pretrained(tiny_model_cfg: Any, numberline_obs: list, tmp_path: Any) -> None:
    from vldac_lightning.models.loading import apply_lora
    from vldac_lightning.models.policy import VLMPolicy
    from vldac_lightning.models.sampling import SamplingConfig

    model, processor = build_tiny_qwen2_vl(**dict(tiny_model_cfg.tiny))
    save_backbone(model, processor, tmp_path / "ckpt")
    cfg = OmegaConf.merge(tiny_model_cfg, {"source": "pretrained", "name_or_path": str(tmp_path / "ckpt"),
                                           "image_only": True, "dtype": "float32", "local_files_only": True})
    loaded, loaded_processor = load_backbone(cfg)
    assert type(loaded) is type(model)
    assert loaded.generation_config.top_k in (0, None) and loaded.generation_config.repetition_penalty == 1.0

    obs = batch_obs(numberline_obs)
    encs, logits = [], []
    for m, proc in ((model, processor), (loaded, loaded_processor)):
        # Through VLMPolicy.encode, the code path that turns observations into model inputs.
        policy = VLMPolicy(apply_lora(m, tiny_model_cfg.lora), proc, value_hidden_sizes=[8],
                           sampling=SamplingConfig(), response_mode="json").eval()
        encs.append(policy.encode(obs))
        with torch.no_grad(), policy.model.disable_adapter():
            logits.append(policy.model(**encs[-1]).logits)
    assert encs[0].keys() == encs[1].keys()
    for k in encs[0]:
        torch.testing.assert_close(encs[1][k], encs[0][k], atol=0, rtol=0, msg=f"processor output {k} differs")
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=0)
