"""The Qwen2 text decoder (Qwen2-VL, Qwen2.5-VL) as plain tensor functions over a static KV cache.

Hugging Face's decoder spends a decode step in Python: mask construction, cache bookkeeping,
rope recomputation, peft's per-layer LoRA branch and hook dispatch, dozens of small modules per
layer. This module computes the same function from the same weights with a handful of tensor ops
per layer and no allocation whose shape depends on the step, so a decode step can be captured as
a CUDA graph (docs/engines.md). It reads weights from the live model and never trains: generation
runs on merged ``W + ΔW`` copies of the adapted projections, refreshed only when an optimizer step
changed the adapter (``WeightPack.refresh``).

The maths is Hugging Face's ``Qwen2VLTextModel`` line for line: RMSNorm in float32 then cast,
rotary embeddings with the multimodal (temporal, height, width) sections, grouped-query
attention, SiLU-gated MLP, residuals in the model dtype, final norm, LM head. Tests hold the two
to each other (tests/models/test_engines.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn

from vldac_lightning.models.lora_merge import effective_weight

SUPPORTED_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen2_vl_text", "qwen2_5_vl_text")


class UnsupportedModel(ValueError):
    """The static engine cannot run this backbone (``model/engine=hf`` can)."""


def language_model(base: nn.Module) -> nn.Module:
    """The text decoder (``model.language_model``) of a Qwen2-VL-style checkpoint."""
    inner = getattr(base, "model", None)
    lm = getattr(inner, "language_model", None)
    if lm is None or not hasattr(lm, "layers"):
        raise UnsupportedModel(f"{type(base).__name__} has no model.language_model decoder")
    return lm


def adapters_enabled(lm: nn.Module) -> bool:
    """False inside peft's ``disable_adapter()`` (the base model, the KL reference), else True."""
    return not any(m.disable_adapters for m in lm.modules() if isinstance(m, LoraLayer))


@dataclass
class DecoderShape:
    """Sizes and constants of the text decoder, read from its config."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    eps: float
    inv_freq: torch.Tensor  # [head_dim / 2] float32
    mrope_section: list[int]  # how the rotary half-dimension splits over (t, h, w) positions
    attention_scaling: float

    @classmethod
    def of(cls, base: nn.Module) -> DecoderShape:
        model_type = getattr(base.config, "model_type", "")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise UnsupportedModel(f"model_type={model_type!r}: the static engine runs {list(SUPPORTED_MODEL_TYPES)}; "
                                   "use model/engine=hf for this backbone")
        cfg = base.config.get_text_config()
        if getattr(cfg, "use_sliding_window", False):
            raise UnsupportedModel("sliding-window attention is not implemented by the static engine; use model/engine=hf")
        if getattr(cfg, "hidden_act", "silu") != "silu":
            raise UnsupportedModel(f"hidden_act={cfg.hidden_act!r}: the static engine implements silu; use model/engine=hf")
        lm = language_model(base)
        rotary = lm.rotary_emb
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
        section = getattr(rotary, "mrope_section", None) or rope.get("mrope_section")
        if section is None:
            raise UnsupportedModel("the text config has no mrope_section; use model/engine=hf")
        heads = cfg.num_attention_heads
        return cls(
            num_layers=cfg.num_hidden_layers, num_heads=heads, num_kv_heads=cfg.num_key_value_heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads, hidden_size=cfg.hidden_size,
            eps=float(cfg.rms_norm_eps), inv_freq=rotary.inv_freq.detach().float(),
            mrope_section=list(section), attention_scaling=float(getattr(rotary, "attention_scaling", 1.0)),
        )


class WeightPack:
    """Plain tensors for the decoder: fused q|k|v and gate|up projections with LoRA merged in.

    Tensors are allocated once and refreshed in place (``copy_``), so a captured CUDA graph that
    reads them stays valid across optimizer steps. ``refresh`` is a no-op unless an adapter
    parameter changed since the last call (PyTorch's in-place version counters say so), which makes
    it cheap to call before every generation.
    """

    def __init__(self, base: nn.Module, shape: DecoderShape) -> None:
        self.shape = shape
        self.lm = language_model(base)
        head = base.get_output_embeddings()
        if head is None:
            raise UnsupportedModel(f"{type(base).__name__} exposes no LM head")
        self.head = head
        self.layers: list[dict[str, torch.Tensor]] = []
        self._key: tuple | None = None
        self.refresh()

    def _lora_state(self) -> tuple:
        """What the merged weights depend on besides the frozen base: every adapter's values and switches."""
        state = []
        for m in self.lm.modules():
            if isinstance(m, LoraLayer):
                state.append((id(m), bool(m.disable_adapters), bool(m.merged), tuple(m.active_adapters)))
                for p in (*m.lora_A.parameters(), *m.lora_B.parameters()):
                    state.append((p.data_ptr(), p._version))
        return tuple(state)

    @torch.no_grad()
    def refresh(self) -> bool:
        """Re-merge the adapted weights if the adapter changed; True when it did."""
        key = (self._lora_state(), self.head.weight.device, self.head.weight.dtype)
        if key == self._key:
            return False
        self._check(self.lm.layers[0])
        fresh = [self._layer(layer) for layer in self.lm.layers]
        if self._key is not None and key[1:] == self._key[1:] and len(fresh) == len(self.layers):
            for old, new in zip(self.layers, fresh):
                for name, t in new.items():
                    old[name].copy_(t)
        else:
            self.layers = fresh
        self._key = key
        return True

    def _check(self, layer: nn.Module) -> None:
        """Whole, plain weights of the decoder's shapes: FSDP shards (flat or DTensor) cannot be read here."""
        s = self.shape
        wants = {"q_proj": (s.num_heads * s.head_dim, s.hidden_size), "k_proj": (s.num_kv_heads * s.head_dim, s.hidden_size),
                 "v_proj": (s.num_kv_heads * s.head_dim, s.hidden_size), "o_proj": (s.hidden_size, s.num_heads * s.head_dim)}
        for name, want in wants.items():
            module = getattr(layer.self_attn, name)
            weight = (module.get_base_layer() if isinstance(module, LoraLayer) else module).weight
            if not isinstance(weight, torch.Tensor) or type(weight.data) is not torch.Tensor or \
                    tuple(weight.shape) != want:
                raise UnsupportedModel(
                    f"the decoder's {name} weight is a {type(weight.data).__name__} of shape {tuple(weight.shape)}, "
                    f"not {want} (sharded, e.g. by trainer=fsdp?); use model/engine=hf with sharded models")

    @staticmethod
    def _layer(layer: nn.Module) -> dict[str, torch.Tensor]:
        attn, mlp = layer.self_attn, layer.mlp
        q, k, v = (effective_weight(m) for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        biases = [_bias(m, w) for m, w in ((attn.q_proj, q), (attn.k_proj, k), (attn.v_proj, v))]
        return {
            "ln1": layer.input_layernorm.weight.detach().float(),
            "ln2": layer.post_attention_layernorm.weight.detach().float(),
            "wqkv": torch.cat([q, k, v]),
            "bqkv": torch.cat(biases),
            "wo": effective_weight(attn.o_proj),
            "wgu": torch.cat([effective_weight(mlp.gate_proj), effective_weight(mlp.up_proj)]),
            "wdown": effective_weight(mlp.down_proj),
        }

    @property
    def embed(self) -> torch.Tensor:
        return self.lm.embed_tokens.weight.detach()

    @property
    def norm(self) -> torch.Tensor:
        return self.lm.norm.weight.detach().float()

    @property
    def lm_head(self) -> torch.Tensor:
        return self.head.weight.detach()


def _bias(module: nn.Module, weight: torch.Tensor) -> torch.Tensor:
    base = module.get_base_layer() if isinstance(module, LoraLayer) else module
    if base.bias is None:
        return torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return base.bias.detach()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2's RMSNorm, computed in float32 (``weight`` is a float32 copy) and returned in ``x``'s dtype.

    In float32 this is Hugging Face's arithmetic. In bf16 Hugging Face rounds the normalised value
    to bf16 before scaling; here the scaled value is rounded once (within one bf16 ulp), and the
    fused op is three kernels per norm instead of seven, which a decode step of a 28-layer model feels.
    """
    if x.dtype == torch.float32:
        return F.rms_norm(x, weight.shape, weight, eps)
    return F.rms_norm(x.float(), weight.shape, weight, eps).to(x.dtype)


def rope_cos_sin(shape: DecoderShape, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and *signed* sin ``[B, S, head_dim]`` for 3-D positions ``[3, B, S]`` (temporal, height, width).

    Each slice of the rotary half-dimension takes its angle from one of the three position rows
    (``mrope_section``); for text tokens the three rows are equal and this is ordinary 1-D rope.
    The sine's first half is negated so that :func:`apply_rope` needs no concatenation.
    """
    freqs = positions[..., None].float() * shape.inv_freq.to(positions.device)  # [3, B, S, D/2]
    parts = freqs.split(shape.mrope_section, dim=-1)
    half = torch.cat([p[i % 3] for i, p in enumerate(parts)], dim=-1)  # [B, S, D/2]
    full = torch.cat([half, half], dim=-1)
    cos = (full.cos() * shape.attention_scaling).to(dtype)
    sin = (full.sin() * shape.attention_scaling).to(dtype)
    d = sin.shape[-1] // 2
    return cos, torch.cat([-sin[..., :d], sin[..., d:]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, heads, S, D]`` by cos/signed sin ``[B, 1, S, D]``.

    Hugging Face's ``x·cos + rotate_half(x)·sin`` with ``rotate_half(x) = [−x₂, x₁]``: rolling x by
    half gives ``[x₂, x₁]`` and the signed sine supplies the minus, so the products are the same
    numbers (negation is exact) with fewer ops.
    """
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


class StaticKVCache:
    """Preallocated keys/values ``[layers][B, kv_heads, L, head_dim]`` plus which slots are attendable."""

    def __init__(self, shape: DecoderShape, batch: int, length: int, dtype: torch.dtype, device: torch.device) -> None:
        size = (batch, shape.num_kv_heads, length, shape.head_dim)
        self.keys = [torch.zeros(size, dtype=dtype, device=device) for _ in range(shape.num_layers)]
        self.values = [torch.zeros(size, dtype=dtype, device=device) for _ in range(shape.num_layers)]
        self.valid = torch.zeros(batch, length, dtype=torch.bool, device=device)  # True: a written, real token
        self.batch, self.length = batch, length


def _qkv(pack_layer: dict[str, torch.Tensor], shape: DecoderShape, h: torch.Tensor,
         cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Projected and rotated q ``[B, H, S, D]``, k and v ``[B, KV, S, D]`` (cos/sin ``[B, 1, S, D]``)."""
    B, S, _ = h.shape
    D, nq, nkv = shape.head_dim, shape.num_heads, shape.num_kv_heads
    qkv = F.linear(h, pack_layer["wqkv"], pack_layer["bqkv"]).view(B, S, nq + 2 * nkv, D).transpose(1, 2)
    qk = apply_rope(qkv[:, : nq + nkv], cos, sin)  # queries and keys rotate alike: one call
    return qk[:, :nq], qk[:, nq:], qkv[:, nq + nkv:]


def _mlp(pack_layer: dict[str, torch.Tensor], h: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(h, pack_layer["wgu"]).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, pack_layer["wdown"])


def prefill(pack: WeightPack, cache: StaticKVCache | None, embeds: torch.Tensor, positions: torch.Tensor,
            attention_mask: torch.Tensor) -> torch.Tensor:
    """Run the prompt ``embeds [B, P, H]`` through the decoder, writing cache slots ``[0, P)`` (if a cache is given).

    ``positions [3, B, P]`` are the model's multimodal rope positions and ``attention_mask [B, P]``
    marks real (1) versus left-padding (0) tokens. Returns the final-normed hidden states
    ``[B, P, H]`` (the LM head's input; V(s) reads the last one).
    """
    shape = pack.shape
    B, P, _ = embeds.shape
    valid = attention_mask.bool()
    causal = torch.ones(P, P, dtype=torch.bool, device=embeds.device).tril()
    # A padding query may see only itself: a row with no visible key would make SDPA return NaN,
    # and that NaN would reach real tokens through the next layer's padded keys and values.
    eye = torch.eye(P, dtype=torch.bool, device=embeds.device)
    mask = (causal & valid[:, None, :]) | eye  # [B, P, P]
    mask = mask[:, None]
    cos, sin = (t.unsqueeze(1) for t in rope_cos_sin(shape, positions, embeds.dtype))
    x = embeds
    for i, layer in enumerate(pack.layers):
        h = rms_norm(x, layer["ln1"], shape.eps)
        q, k, v = _qkv(layer, shape, h, cos, sin)
        if cache is not None:
            cache.keys[i][:, :, :P] = k
            cache.values[i][:, :, :P] = v
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        x = x + F.linear(attn.transpose(1, 2).reshape(B, P, -1), layer["wo"])
        x = x + _mlp(layer, rms_norm(x, layer["ln2"], shape.eps))
    if cache is not None:
        cache.valid.zero_()
        cache.valid[:, :P] = valid
    return rms_norm(x, pack.norm, shape.eps)


def decode(pack: WeightPack, cache: StaticKVCache, tokens: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
           slot: torch.Tensor) -> torch.Tensor:
    """One decode step: feed ``tokens [B]`` at cache ``slot`` (a 1-element tensor) with its rope
    cos/signed sin ``[B, 1, 1, D]``; returns the final-normed hidden state ``[B, H]``.

    Every shape is fixed by (B, L), and the step's position lives in tensors, so the function can
    be captured once as a CUDA graph and replayed for every token.
    """
    shape = pack.shape
    B = tokens.shape[0]
    D, nq, nkv = shape.head_dim, shape.num_heads, shape.num_kv_heads
    cache.valid.index_fill_(1, slot, True)
    # Grouped-query attention without repeating K/V: a kv head's query group becomes the query
    # length of one attention call, and the key mask broadcasts over it.
    mask = cache.valid[:, None, None, :]  # [B, 1, 1, L]
    x = F.embedding(tokens, pack.embed).unsqueeze(1)  # [B, 1, H]
    for i, layer in enumerate(pack.layers):
        h = rms_norm(x, layer["ln1"], shape.eps)
        q, k, v = _qkv(layer, shape, h, cos, sin)
        cache.keys[i].index_copy_(2, slot, k)
        cache.values[i].index_copy_(2, slot, v)
        attn = F.scaled_dot_product_attention(q.reshape(B, nkv, nq // nkv, D), cache.keys[i], cache.values[i],
                                              attn_mask=mask)
        # The residual add rides in the GEMM (addmm): one kernel instead of two per projection.
        x = torch.addmm(x.view(B, -1), attn.reshape(B, nq * D), layer["wo"].t()).view(B, 1, -1)
        gate, up = F.linear(rms_norm(x, layer["ln2"], shape.eps), layer["wgu"]).chunk(2, dim=-1)
        x = torch.addmm(x.view(B, -1), (F.silu(gate) * up).view(B, -1), layer["wdown"].t()).view(B, 1, -1)
    return rms_norm(x[:, 0], pack.norm, shape.eps)


def capture_decoder_inputs(base: nn.Module, enc: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The text decoder's inputs for a prompt batch: (embeds ``[B, P, H]``, positions ``[3, B, P]`` or None).

    The vision tower, the image-feature merge and the multimodal rope positions are the model's
    own code (they change between transformers versions; this does not have to): the model runs
    until its text decoder is called, which is where we take over.
    """
    lm = language_model(base)
    captured: dict[str, Any] = {}

    class _Reached(Exception):
        pass

    def grab(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        captured.update(kwargs)
        raise _Reached

    handle = lm.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        base.model(**enc, use_cache=False)
    except _Reached:
        pass
    finally:
        handle.remove()
    embeds = captured.get("inputs_embeds")
    if embeds is None:
        raise UnsupportedModel(f"{type(base).__name__}.model did not call its text decoder with inputs_embeds")
    positions = captured.get("position_ids")
    if positions is not None and positions.dim() == 3 and positions.shape[0] == 4:
        positions = positions[1:]  # newer transformers prepend 1-D text positions (for packing masks)
    return embeds, positions
