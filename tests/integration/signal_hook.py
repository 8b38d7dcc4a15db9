"""Run ``python -m vldac_lightning.train`` and signal it at a chosen point (deterministic fault injection).

``python tests/integration/signal_hook.py <overrides...>`` with
``VLDAC_TEST_SIGNAL`` = ``KILL`` or ``TERM`` and ``VLDAC_TEST_SIGNAL_AT`` =
- ``optimizer_step:N`` — just before the N-th optimizer step (mid-update after N-1 steps), or
- ``decode_after_step:N`` — at the first decode step of generation after N optimizer steps
  (mid-generation in the next iteration's rollout).
The process signals itself, so where it stops never depends on how fast the machine is. The time the
signal was sent goes to ``VLDAC_TEST_SIGNAL_STAMP`` when set.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time

import torch

SIGNAL = getattr(signal, f"SIG{os.environ['VLDAC_TEST_SIGNAL']}")
WHERE, AT = os.environ["VLDAC_TEST_SIGNAL_AT"].split(":")
STAMP = os.environ.get("VLDAC_TEST_SIGNAL_STAMP")
steps = 0
sent = False


def send() -> None:
    global sent
    if sent:
        return
    sent = True
    if STAMP:
        with open(STAMP, "w") as f:
            f.write(repr(time.time()))
    os.kill(os.getpid(), SIGNAL)


adam_step = torch.optim.Adam.step


def step(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    global steps
    if WHERE == "optimizer_step" and steps + 1 == int(AT):
        send()
    steps += 1
    return adam_step(self, *args, **kwargs)


torch.optim.Adam.step = step  # type: ignore[method-assign]

if WHERE == "decode_after_step":
    # A decode step of either engine: the hf engine's logits processor runs once per token, the
    # static engine's DecodeSession.run_step once per token after the first.
    from vldac_lightning.models import sampling
    from vldac_lightning.models.engines import static

    processor_call = sampling.PolicyLogitsProcessor.__call__
    run_step = static.DecodeSession.run_step

    def call(self, input_ids, scores):  # type: ignore[no-untyped-def]
        if steps >= int(AT):
            send()
        return processor_call(self, input_ids, scores)

    def static_step(self):  # type: ignore[no-untyped-def]
        if steps >= int(AT):
            send()
        return run_step(self)

    sampling.PolicyLogitsProcessor.__call__ = call  # type: ignore[method-assign]
    static.DecodeSession.run_step = static_step  # type: ignore[method-assign]

sys.argv = ["vldac_lightning.train", *sys.argv[1:]]
runpy.run_module("vldac_lightning.train", run_name="__main__", alter_sys=True)
