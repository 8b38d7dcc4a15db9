"""Rollout container: flat index order and minibatch sampling."""

import dataclasses

import pytest
import torch

from vldac_lightning.rollout.buffer import Minibatch, Rollout

T, N, R = 3, 2, 4  # 3 steps per env, 2 envs, responses padded to 4 tokens


def make_rollout() -> Rollout:
    # values[t, n] = 10·t + n makes the step (t, n) readable from the number itself.
    values = torch.tensor([[0.0, 1.0], [10.0, 11.0], [20.0, 21.0]])
    flat_index = torch.arange(T * N, dtype=torch.float32)
    return Rollout(
        rewards=torch.zeros(T, N),
        terminated=torch.zeros(T, N, dtype=torch.bool),
        truncated=torch.zeros(T, N, dtype=torch.bool),
        values=values,
        next_values=values + 1.0,
        # row i of the per-token tensors holds i, so gathered rows reveal their flat index
        old_logprobs=flat_index.unsqueeze(1).expand(T * N, R).clone(),
        response_mask=torch.ones(T * N, R),
        steps=[f"t{t}n{n}" for t in range(T) for n in range(N)],  # index t * N + n
        ref_logprobs=-flat_index.unsqueeze(1).expand(T * N, R).clone(),
    )


def test_flat_is_row_major_t_times_n_plus_n():
    rollout = make_rollout()
    assert rollout.num_steps == 6
    flat = rollout.flat("values")
    # [[0, 1], [10, 11], [20, 21]] -> [0, 1, 10, 11, 20, 21]: flat index t·N + n is step (t, n)
    torch.testing.assert_close(flat, torch.tensor([0.0, 1.0, 10.0, 11.0, 20.0, 21.0]))
    assert flat[2 * N + 1].item() == rollout.values[2, 1].item() == 21.0
    assert rollout.steps[2 * N + 1] == "t2n1"
    with pytest.raises(ValueError, match="not a \\[T, N\\] field"):
        rollout.flat("old_logprobs")


def test_minibatches_cover_every_step_once_and_gather_consistently():
    rollout = make_rollout()
    advantages = torch.arange(T * N, dtype=torch.float32) * 100  # [T*N], entry i = 100·i
    returns = torch.arange(T * N, dtype=torch.float32) * 1000
    batches = list(
        rollout.minibatches(advantages, returns, batch_size=2, generator=torch.Generator().manual_seed(0))
    )
    assert len(batches) == 3 and all(isinstance(mb, Minibatch) for mb in batches)
    seen = torch.cat([mb.indices for mb in batches])
    assert sorted(seen.tolist()) == list(range(T * N))  # every step exactly once
    for mb in batches:
        i = mb.indices
        torch.testing.assert_close(mb.advantages, i.float() * 100)
        torch.testing.assert_close(mb.returns, i.float() * 1000)
        torch.testing.assert_close(mb.old_values, rollout.flat("values")[i])
        torch.testing.assert_close(mb.old_logprobs[:, 0], i.float())
        torch.testing.assert_close(mb.ref_logprobs[:, 0], -i.float())
        assert mb.old_logprobs.shape == (2, R) and mb.response_mask.shape == (2, R)
        assert mb.action_mask is None
        assert mb.steps == [f"t{k // N}n{k % N}" for k in i.tolist()]


def test_minibatches_accept_time_major_advantages():
    # compute_gae returns [T, N]; flattening must use the same row-major order.
    rollout = make_rollout()
    adv_tn = torch.tensor([[0.0, 1.0], [10.0, 11.0], [20.0, 21.0]])
    for mb in rollout.minibatches(adv_tn, adv_tn, batch_size=3, generator=torch.Generator().manual_seed(1)):
        torch.testing.assert_close(mb.advantages, mb.old_values)  # same numbers as values by construction


def test_minibatch_order_is_reproducible_from_the_generator():
    rollout = make_rollout()
    adv = torch.zeros(T * N)

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([mb.indices for mb in rollout.minibatches(adv, adv, 1, gen)]).tolist()

    assert order(123) == order(123)
    assert sorted(order(123)) == list(range(T * N))
    # Successive epochs from one generator continue its stream, so they are reshuffled
    # (6! = 720 orders; with this seed the three epochs are not all the same).
    gen = torch.Generator().manual_seed(7)
    epochs = [[mb.indices.item() for mb in rollout.minibatches(adv, adv, 1, gen)] for _ in range(3)]
    assert len({tuple(e) for e in epochs}) > 1


def test_minibatch_size_must_divide_rollout():
    rollout = make_rollout()
    with pytest.raises(ValueError, match="rollout of 6 steps is not divisible by minibatch size 4"):
        next(rollout.minibatches(torch.zeros(6), torch.zeros(6), 4, torch.Generator()))


def test_rollout_validates_shapes():
    good = make_rollout()
    # dataclasses.replace re-runs __init__, so __post_init__ validates the modified copy.
    with pytest.raises(ValueError, match="steps has 5 records"):
        dataclasses.replace(good, steps=good.steps[:5])
    with pytest.raises(ValueError, match="response_mask"):
        dataclasses.replace(good, response_mask=torch.ones(T * N, R + 1))
