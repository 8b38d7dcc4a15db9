"""``model/engine=static``: a preallocated KV cache, one prefill, and a fixed-shape decode step.

Why not Hugging Face's own static cache + ``torch.compile``: its ``generate`` loop still runs our
logits processor in Python on every token (the trie constraint walks each prefix on the host), it
synchronises with the host every token (its stopping check), and peft's unmerged LoRA branch
doubles the kernels of every adapted projection. Each of those is a per-token host round trip,
which is exactly the overhead that made a 2B decode step 54 ms where reading the weights takes
under 1 ms. So only the prompt's *encoding* stays Hugging Face's (vision tower, image-feature
merge, multimodal rope positions: ``qwen2_decoder.capture_decoder_inputs``); the text decoder is
ours (``qwen2_decoder``), over merged LoRA weights, and everything a token needs — sampling, the
constraint masks, log-prob recording, end-of-response tracking — happens on the device inside one
decode step. On CUDA that step is captured once per batch shape as a CUDA graph and replayed;
the host looks at the device only every ``check_every`` steps (all finished? stop signal?).

Exactness (tests/models/test_engines.py): greedy tokens equal ``engine=hf``'s, and the recorded
log π_old equals a scoring forward of the same tokens (float32 ≤ 1e-5; in bf16 the merged
weights and fused kernels round differently, as ``hf`` with ``merge_lora`` does).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from peft.tuners.lora import LoraLayer
from torch import nn

from vldac_lightning.models.engines.base import DecodeSpec, Generation, finish
from vldac_lightning.models.engines.qwen2_decoder import (
    DecoderShape,
    StaticKVCache,
    WeightPack,
    adapters_enabled,
    capture_decoder_inputs,
    decode,
    language_model,
    prefill,
    rope_cos_sin,
)
from vldac_lightning.models.sampling import filter_logits, fit_vocab
from vldac_lightning.utils.interrupt import local_stop_requested

log = logging.getLogger(__name__)


class DecodeSession:
    """The device state of one batch shape: KV cache, sampling state, outputs, and (CUDA) the graph.

    Reused across ``generate`` calls of the same shape, so buffers are allocated and the graph is
    captured once per (batch, length bucket), not once per call.
    """

    def __init__(self, pack: WeightPack, spec: DecodeSpec, batch: int, length: int, *, do_sample: bool,
                 use_graph: bool) -> None:
        head = pack.lm_head
        device, dtype = head.device, head.dtype
        self.pack, self.spec, self.do_sample = pack, spec, do_sample
        self.cache = StaticKVCache(pack.shape, batch, length, dtype, device)
        vocab = head.shape[0]
        self.trie = spec.trie.tables(vocab, spec.support, device) if spec.trie is not None else None
        if self.trie is None and spec.support is not None:
            allowed = fit_vocab(spec.support, vocab).to(device)
            self.bias = torch.zeros(1, vocab, device=device).masked_fill(~allowed, float("-inf"))
        else:
            self.bias = self.trie.bias if self.trie is not None else None
        long = dict(dtype=torch.long, device=device)
        R = spec.max_new_tokens
        self.token = torch.zeros(batch, **long)  # the last sampled token (fed next)
        self.k = torch.zeros(1, **long)  # decode steps taken (indexes the rope tables)
        D = pack.shape.head_dim
        self.cos = torch.zeros(batch, R, D, dtype=dtype, device=device)  # rope of the token fed at each step
        self.sin = torch.zeros(batch, R, D, dtype=dtype, device=device)
        self.slot = torch.zeros(1, **long)  # its cache slot
        self.t = torch.zeros(1, **long)  # the response index written next
        self.node = torch.zeros(batch, **long)  # trie state
        self.finished = torch.zeros(batch, dtype=torch.bool, device=device)
        self.ids = torch.full((batch, R), spec.pad_token_id, **long)
        self.logp = torch.zeros(batch, R, dtype=torch.float32, device=device)
        self.pad = torch.full((batch,), spec.pad_token_id, **long)
        self.use_graph = use_graph and device.type == "cuda"
        self.graph: torch.cuda.CUDAGraph | None = None

    # ----------------------------------------------------------------------------- on the device
    def select(self, logits: torch.Tensor) -> None:
        """Pick each row's next token from ``logits [B, V]`` and record it (fixed shapes, no sync)."""
        z = logits.float()
        if self.bias is not None:
            z = z + (self.bias[self.node] if self.trie is not None else self.bias)
        z = filter_logits(z, self.spec.sampling)  # constraint applied above: temperature, top-k, top-p
        logp = torch.log_softmax(z, dim=-1)
        if self.do_sample:
            # Gumbel-max: argmax(log p + G), G = -log(E), E = -log(U) ~ Exp(1), is a draw from p;
            # excluded tokens stay at -inf. From uniforms: CPU exponential_ is ~5x slower than rand.
            noise = torch.rand_like(logp).log_().neg_().log_()
            token = torch.argmax(logp - noise, dim=-1)
        else:
            token = torch.argmax(z, dim=-1)
        token = torch.where(self.finished, self.pad, token)  # as generate: finished rows emit padding
        self.ids.index_copy_(1, self.t, token[:, None])
        self.logp.index_copy_(1, self.t, logp.gather(1, token[:, None]))
        self.finished |= token == self.spec.eos_token_id
        if self.trie is not None:
            self.node.copy_(self.trie.advance(self.node, token))
        self.token.copy_(token)
        self.t.add_(1)

    def step(self) -> None:
        """Feed the last token, sample the next one."""
        cos = self.cos.index_select(1, self.k)[:, None]  # [B, 1, 1, D]
        sin = self.sin.index_select(1, self.k)[:, None]
        hidden = decode(self.pack, self.cache, self.token, cos, sin, self.slot)
        self.select(F.linear(hidden, self.pack.lm_head))
        self.k.add_(1)
        self.slot.add_(1)

    # ----------------------------------------------------------------------------- on the host
    def start(self, prompt_len: int, next_rope: torch.Tensor, last_hidden: torch.Tensor) -> None:
        """Reset the state for a new batch whose prompt filled ``prompt_len`` slots; sample token 0.

        ``next_rope [B]`` is the rope position of the first response token; response token j sits at
        ``next_rope + j`` (text positions are 1-D), so the rope tables are computed once here.
        """
        self.slot.fill_(prompt_len)
        self.t.zero_()
        self.k.zero_()
        self.node.zero_()
        self.finished.zero_()
        B, R = self.ids.shape
        positions = next_rope[:, None] + torch.arange(R, device=next_rope.device)
        cos, sin = rope_cos_sin(self.pack.shape, positions[None].expand(3, B, R), self.cos.dtype)
        self.cos.copy_(cos)
        self.sin.copy_(sin)
        self.select(F.linear(last_hidden, self.pack.lm_head))

    def run_step(self) -> None:
        if not self.use_graph:
            self.step()
            return
        if self.graph is None:
            self._capture()  # runs this step eagerly as the warm-up, then records it
            return
        self.graph.replay()

    def _capture_failed(self, error: Exception) -> None:
        # Generation stays correct without a graph, only slower: say so once and go on eagerly.
        log.warning("static engine: capturing the decode step as a CUDA graph failed (%s: %s); decoding "
                    "without CUDA graphs (set model.engine.cuda_graphs=false to skip the attempt)",
                    type(error).__name__, error)
        self.use_graph = False

    def _capture(self) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.step()  # warm-up on a side stream (allocator, kernel selection): the real step
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # records the step without running it: the state stays as is
                self.step()
        except Exception as e:  # noqa: BLE001 - any capture failure: fall back to eager decoding
            self._capture_failed(e)
            return
        self.graph = graph


class StaticEngine:
    """Fast generation for Qwen2-VL-family backbones (``model/engine=static``; docs/engines.md).

    ``cuda_graphs``: capture the decode step as a CUDA graph (ignored on CPU). ``check_every``:
    decode steps between the host's looks at the device (all finished? ‑ each look is a sync).
    ``length_multiple``: cache lengths are rounded up to this, so prompts of similar length share
    one captured graph. ``max_sessions``: batch shapes kept (each holds a KV cache).
    """

    name = "static"

    def __init__(self, cuda_graphs: bool = True, check_every: int = 8, length_multiple: int = 64,
                 max_sessions: int = 8) -> None:
        if check_every < 1 or length_multiple < 1 or max_sessions < 1:
            raise ValueError(f"model.engine: check_every={check_every}, length_multiple={length_multiple} and "
                             f"max_sessions={max_sessions} must all be >= 1")
        self.cuda_graphs = cuda_graphs
        self.check_every = check_every
        self.length_multiple = length_multiple
        self.max_sessions = max_sessions
        self._packs: dict[tuple[int, bool], WeightPack] = {}
        self._sessions: OrderedDict[tuple, DecodeSession] = OrderedDict()
        self._last_inputs: tuple[dict, tuple[torch.Tensor, torch.Tensor | None]] | None = None
        self._vision: dict[int, bool] = {}

    def _vision_adapted(self, base: nn.Module) -> bool:
        """Whether anything before the text decoder (vision tower, embeddings) has LoRA layers."""
        if id(base) not in self._vision:
            lm = language_model(base)
            inner = {id(m) for m in lm.layers.modules()}
            self._vision = {id(base): any(isinstance(m, LoraLayer) and id(m) not in inner for m in base.modules())}
        return self._vision[id(base)]

    def pack(self, base: nn.Module) -> WeightPack:
        """The decoder weights as the backbone computes now: merged LoRA, or the base weights while
        the adapter is disabled (the KL reference). One pack per state, each refreshed in place when
        its adapter changed, so captured graphs stay valid."""
        lm = language_model(base)
        key = (id(base), adapters_enabled(lm))
        pack = self._packs.get(key)
        if pack is None or pack.lm is not lm:
            if any(k[0] != id(base) or p.lm is not lm for k, p in self._packs.items()):
                self._packs.clear()  # another backbone: drop the old one's weights and graphs
                self._sessions.clear()
            pack = WeightPack(base, DecoderShape.of(base))
            self._packs[key] = pack
        else:
            pack.refresh()
        return pack

    def _session(self, pack: WeightPack, spec: DecodeSpec, batch: int, length: int, do_sample: bool) -> DecodeSession:
        trie_key = id(spec.trie) if spec.trie is not None else None
        support_key = None if spec.support is None else (spec.support.data_ptr(), spec.support._version)
        key = (batch, length, do_sample, spec.sampling, spec.max_new_tokens, spec.eos_token_id, spec.pad_token_id,
               trie_key, support_key, pack.lm_head.device, pack.lm_head.dtype,
               tuple(t.data_ptr() for t in pack.layers[0].values()))
        session = self._sessions.get(key)
        if session is None:
            session = DecodeSession(pack, spec, batch, length, do_sample=do_sample, use_graph=self.cuda_graphs)
            self._sessions[key] = session
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(key)
        return session

    def _prompt(self, model: nn.Module, enc: dict[str, torch.Tensor]) -> tuple[
            WeightPack, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(weights, decoder input embeds ``[B, P, H]``, rope positions ``[3, B, P]``, attention mask
        ``[B, P]``, the rope position of the first response token ``[B]``)."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        pack = self.pack(base)
        # Without LoRA before the text decoder (real checkpoints adapt the language model only; the
        # tiny model adapts its vision tower too) the decoder inputs do not depend on the adapter,
        # so the policy's pass and the KL reference's pass over the same prompts (``act``) share
        # one run of the vision tower.
        reusable = not self._vision_adapted(base)
        last = self._last_inputs
        if reusable and last is not None and last[0] is enc:
            embeds, positions = last[1]
        else:
            embeds, positions = capture_decoder_inputs(base, enc)
            # Holding ``enc`` keeps its id from being reused by another batch while cached.
            self._last_inputs = (enc, (embeds, positions)) if reusable else None
        mask = enc["attention_mask"]
        if positions is None:  # a text-only batch: 1-D positions over the real tokens
            B, P = mask.shape
            positions = (mask.long().cumsum(-1) - 1).clamp_(min=0)[None].expand(3, B, P)
        # One past the prompt's largest rope position (images advance it by their grid size, not
        # by their token count); response token j sits at next_rope + j.
        next_rope = positions.masked_fill(~mask.bool()[None], 0).amax(dim=(0, 2)) + 1
        return pack, embeds.to(pack.lm_head.dtype), positions, mask, next_rope

    @torch.no_grad()
    def prompt_hidden(self, model: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last prompt token's final hidden state ``[B, H]`` (V(s) for bootstrapping), prefill only."""
        pack, embeds, positions, mask, _ = self._prompt(model, enc)
        return prefill(pack, None, embeds, positions, mask)[:, -1]

    @torch.no_grad()
    def response_logits(self, model: nn.Module, enc: dict[str, torch.Tensor], response_ids: torch.Tensor,
                        response_mask: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, R, V]`` predicting each response token, from one pass over prompt + response
        with the weights as they are now (inside ``disable_adapter()``: the KL reference)."""
        pack, embeds, positions, mask, next_rope = self._prompt(model, enc)
        B, P = mask.shape
        R = response_ids.shape[1]
        response_pos = (next_rope[:, None] + torch.arange(R, device=next_rope.device))[None].expand(3, B, R)
        hidden = prefill(pack, None, torch.cat([embeds, F.embedding(response_ids, pack.embed)], dim=1),
                         torch.cat([positions, response_pos], dim=2),
                         torch.cat([mask, response_mask.to(mask.dtype)], dim=1))
        return F.linear(hidden[:, P - 1: P + R - 1], pack.lm_head)

    @torch.no_grad()
    def generate(self, model: nn.Module, enc: dict[str, torch.Tensor], spec: DecodeSpec, *, do_sample: bool,
                 with_scores: bool) -> Generation:
        pack, embeds, positions, mask, next_rope = self._prompt(model, enc)
        B, P = mask.shape
        length = -(-(P + spec.max_new_tokens) // self.length_multiple) * self.length_multiple
        session = self._session(pack, spec, B, length, do_sample)
        hidden = prefill(pack, session.cache, embeds, positions, mask)
        last = hidden[:, -1]
        session.start(P, next_rope, last)
        steps = 1
        while steps < spec.max_new_tokens:
            if local_stop_requested():
                break
            session.run_step()
            steps += 1
            if steps % self.check_every == 0 and bool(session.finished.all()):
                break
        raw = session.ids[:, :steps]
        logp = session.logp[:, :steps] if with_scores else None
        response, mask_out, logp = finish(raw, logp, spec)
        return Generation(response.clone(), mask_out, None if logp is None else logp.clone(),
                          last.clone() if with_scores else None)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "cuda_graphs": self.cuda_graphs, "check_every": self.check_every,
                "length_multiple": self.length_multiple}
