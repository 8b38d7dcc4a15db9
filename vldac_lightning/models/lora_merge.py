"""Generate through merged LoRA weights, then put the frozen base back exactly as it was.

Unmerged, every adapted projection runs the LoRA branch beside the base matmul (an input cast, two
small matmuls, a scale, an add, a cast back). For a batch of a few sequences a decode step on a GPU
is bound by kernel launches, and that branch doubles them: on a 2B-shaped Qwen2-VL (bf16, H200)
a decode step took 45 ms with the branch and 25 ms with the adapter disabled
(experiments/profile_decode.py). Sampling needs no gradients, so it can run on W + ΔW instead.

Why not peft's ``merge_adapter()`` / ``unmerge_adapter()``: unmerging subtracts ΔW again, and in
bf16 ``(W + ΔW) − ΔW`` is not W. Repeated every rollout step, the rounding would accumulate in the
frozen base, which is also the KL reference (adapter disabled). Here merged *copies* stand in for
the base weights for the duration of the context and the original parameters are put back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from peft import PeftModel
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora import LoraLayer
from peft.tuners.lora.layer import _ConvNd as LoraConv
from torch import nn

# LoRA layer types whose merge is ``base.weight += get_delta_weight()`` (peft merges them so too).
MERGEABLE = (LoraLinear, LoraConv)


def mergeable_lora_layers(model: PeftModel) -> list[LoraLayer] | None:
    """The model's LoRA layers if all of them can be merged exactly as plain ``W + ΔW``, else None."""
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if not layers:
        return None
    for m in layers:
        # Variants (DoRA & co.) are not W + ΔW; a merged or disabled layer already bypasses its branch.
        if not isinstance(m, MERGEABLE) or m.merged or m.lora_variant or m.disable_adapters:
            return None
    return layers  # type: ignore[return-value]


@contextmanager
def lora_merged(model: PeftModel) -> Iterator[bool]:
    """Inside: the adapted layers compute ``x @ (W + ΔW)ᵀ`` in one matmul, the adapter branch disabled.

    Yields whether it merged (False: nothing to merge or a layer it cannot merge exactly; the model
    then runs unmerged, which is the same function). The merged weight is rounded once, from
    ``W + ΔW`` computed in float32. Costs a copy of the adapted weights while inside. Use only
    without gradients.
    """
    layers = mergeable_lora_layers(model)
    if layers is None:
        yield False
        return
    originals: list[tuple[nn.Module, nn.Parameter]] = []
    try:
        with torch.no_grad():
            for m in layers:
                base = m.get_base_layer()
                merged = effective_weight(m)  # a new tensor, never an alias of the original
                originals.append((base, base.weight))
                base.weight = nn.Parameter(merged, requires_grad=False)
        with model.disable_adapter():
            yield True
    finally:
        for base, weight in originals:
            base.weight = weight


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight a (possibly LoRA-adapted) linear layer applies now: ``W + ΔW`` of its active
    adapters, computed in float32 and rounded once to ``W``'s dtype; ``W`` itself when the adapter is
    disabled or already merged, or for a plain layer. A detached new tensor for adapted layers."""
    if not isinstance(module, LoraLayer):
        return module.weight.detach()
    base = module.get_base_layer()
    if module.disable_adapters or module.merged:
        return base.weight.detach()
    if not isinstance(module, MERGEABLE) or module.lora_variant:
        raise ValueError(f"{type(module).__name__} with adapter variants (e.g. DoRA) is not a plain W + ΔW")
    merged = base.weight.detach().to(torch.float32, copy=True)
    for adapter in module.active_adapters:
        if adapter in module.lora_A:
            merged += module.get_delta_weight(adapter).detach().float()
    return merged.to(base.weight.dtype)
