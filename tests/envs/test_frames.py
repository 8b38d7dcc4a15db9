"""FrameHistory: observations share their frames; content is always exactly what was pushed."""

from __future__ import annotations

import numpy as np
import pytest

from vldac_lightning.envs.frames import FrameHistory


def frame(v: int, shape: tuple[int, int] = (2, 3)) -> np.ndarray:
    return np.full((*shape, 3), v, np.uint8)


def stack(*values: int) -> np.ndarray:
    return np.stack([frame(v) for v in values])


def episode(values: list[int], k: int) -> list[np.ndarray]:
    """The stacked observations a k-frame history env returns for frames ``values``."""
    return [stack(*values[max(0, t - k + 1) : t + 1]) for t in range(len(values))]


def test_continuing_observations_store_one_frame_each_and_share_memory() -> None:
    h = FrameHistory()
    obs = episode(list(range(10)), k=4)
    views = [h.push(o) for o in obs]
    assert all(np.array_equal(v, o) for v, o in zip(views, obs))
    assert h.frames_stored == 10
    assert all(np.shares_memory(a, b) for a, b in zip(views[3:], views[4:]))
    assert not views[-1].flags.writeable


def test_a_new_episode_starts_fresh_and_old_views_keep_their_content() -> None:
    h = FrameHistory()
    first = [h.push(o) for o in episode([1, 2, 3, 4, 5], k=4)]
    second = [h.push(o) for o in episode([9, 8, 7], k=4)]
    assert np.array_equal(first[-1], stack(2, 3, 4, 5)) and np.array_equal(second[-1], stack(9, 8, 7))
    assert h.frames_stored == 8


def test_an_unchanged_observation_is_the_same_view() -> None:
    h = FrameHistory()
    a = h.push(stack(1, 2))
    assert h.push(stack(1, 2)) is a and h.frames_stored == 2


def test_a_non_continuing_observation_is_copied_whole() -> None:
    h = FrameHistory()
    h.push(stack(1, 2, 3))
    v = h.push(stack(5, 6, 7))  # same length, different frames: not a continuation
    assert np.array_equal(v, stack(5, 6, 7)) and h.frames_stored == 6


@pytest.mark.parametrize("k", [1, 4])
def test_block_rollover_keeps_every_view_intact(k: int) -> None:
    h = FrameHistory(block_bytes=0)  # the smallest blocks (8 frames): many rollovers
    obs = episode(list(range(50)), k=k)
    views = [h.push(o) for o in obs]
    assert all(np.array_equal(v, o) for v, o in zip(views, obs))
    assert h.frames_stored == 50  # a rollover carries the kept frames over; it stores no new ones


def test_a_frame_size_change_gets_a_new_block() -> None:
    h = FrameHistory()
    h.push(stack(1))
    v = h.push(np.stack([frame(2, (4, 5))]))
    assert v.shape == (1, 4, 5, 3) and v[0, 0, 0, 0] == 2
