"""Image histories stored once per step: consecutive observations share their frames.

A language env's observation holds its last k frames, so a rollout that keeps every step's
observation would store each frame k times (and a vector env batches fresh copies every step).
:class:`FrameHistory` keeps one env's frames in append-only blocks and returns each observation as a
read-only *view* of k consecutive frames: when observation t+1 repeats observation t's newest k−1
frames, only the new frame is copied. Views are ordinary ``uint8 [n, H, W, 3]`` arrays, so
consumers (policy, collector, callbacks) need no change.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FrameHistory"]

_BLOCK_BYTES = 2 << 20  # each block holds ~2 MB of frames (at least 8 frames)


class FrameHistory:
    """One env copy's frames; :meth:`push` turns a stacked observation into a shared view."""

    def __init__(self, block_bytes: int = _BLOCK_BYTES) -> None:
        self.block_bytes = int(block_bytes)
        self._block: np.ndarray | None = None
        self._used = 0  # frames written into the current block
        self._window: np.ndarray | None = None  # the last view returned
        self._window_at_end = False  # it ends at the current block's last written frame
        self.frames_stored = 0  # frames copied so far (for tests and diagnostics)

    def push(self, images: np.ndarray) -> np.ndarray:
        """Store ``images`` (uint8 ``[n, H, W, 3]``, oldest first) and return an equal read-only view."""
        images = np.asarray(images)
        last = self._window
        if last is not None and last.shape == images.shape and np.array_equal(last, images):
            return last  # the observation did not change (e.g. a penalised answer: no env step)
        n = images.shape[0]
        keep = n - 1
        continues = (
            last is not None and self._window_at_end and keep >= 1 and last.shape[0] >= keep
            and last.shape[1:] == images.shape[1:] and np.array_equal(last[last.shape[0] - keep :], images[:keep])
        )
        if not continues:
            keep = 0
        new = images[keep:]
        self._reserve(new.shape[0], keep, images.shape[1:], images.dtype)
        assert self._block is not None
        start = self._used - keep
        self._block[self._used : self._used + new.shape[0]] = new
        self._used += new.shape[0]
        self.frames_stored += new.shape[0]
        view = self._block[start : self._used]
        view.flags.writeable = False  # shared with earlier observations: never modify in place
        self._window, self._window_at_end = view, True
        return view

    def _reserve(self, count: int, keep: int, frame_shape: tuple[int, ...], dtype: np.dtype) -> None:
        """Make room for ``count`` frames after the ``keep`` newest ones (copied into a new block)."""
        block = self._block
        if block is not None and block.shape[1:] == frame_shape and block.dtype == dtype:
            if self._used + count <= block.shape[0]:
                return
        frame_bytes = int(np.prod(frame_shape)) * np.dtype(dtype).itemsize
        capacity = max(8, count + keep, self.block_bytes // max(frame_bytes, 1))
        fresh = np.empty((capacity, *frame_shape), dtype)
        if keep:
            assert block is not None
            fresh[:keep] = block[self._used - keep : self._used]
        self._block, self._used = fresh, keep
