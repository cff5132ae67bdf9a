"""Background decoding: clip frames are decoded and stacked into batches in worker threads while the
metrics score the previous batch. PyAV and NumPy release the GIL while they work, so threads overlap.

Peak host memory per clip pair is bounded by the queues, not by the clip's length: at most
``2 * batch_size`` decoded frames per clip in the per-clip queues, plus ``PREFETCH_BATCHES + 2`` stacked
batches (queued, being filled, being scored), each ``batch_size`` frames of prediction and reference:
about ``(4 * batch_size + 2 * batch_size * (PREFETCH_BATCHES + 2)) * H * W * 3`` bytes for uint8 frames.
The scoring engine decodes the clip pair it scores and the next one at a time, twice that; on a GPU the one it
scores and ``engine.PAIRS_AHEAD_ON_DEVICE`` more (2: three times that).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from foresight_eval.errors import InputError

T = TypeVar("T")
PREFETCH_BATCHES = 2
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def _produce(items: Iterable[T], slots: queue.Queue, stop: threading.Event) -> None:
    try:
        for item in items:
            while not stop.is_set():
                try:
                    slots.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if stop.is_set():
                return
        slots.put(_DONE)
    except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
        slots.put(_Failure(exc))


class Prefetched(Iterator[T]):
    """Iterates ``items`` in a daemon thread started at once (before the first ``next``), at most ``depth``
    ahead of the consumer: a clip's decoding can begin while the previous clip is still being scored.

    Exceptions raised while producing are re-raised in the consumer at the point they occurred.
    ``close()`` (or the iterator's collection) tells the producer to stop at its next item.
    """

    def __init__(self, items: Iterable[T], depth: int):
        self._slots: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._finished = False
        # The thread holds the queue and the event, not this object: an abandoned iterator is still collected.
        threading.Thread(target=_produce, args=(items, self._slots, self._stop), daemon=True).start()

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        item = self._slots.get()
        if item is _DONE:
            self._finished = True
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item

    def close(self) -> None:
        self._finished = True
        self._stop.set()

    def __del__(self) -> None:
        self._stop.set()


@dataclass
class HostBatch:
    """Aligned frames of a clip pair on the host, stacked: (B, H, W, 3) arrays and their frame indices."""

    frame_index: np.ndarray  # (B,) int64
    pred: torch.Tensor
    ref: torch.Tensor
    ref_digest: str | None = None  # ``digest_ref(ref)`` when PairFrames was given one


class PairFrames:
    """Host batches of a clip pair, decoded ahead in background threads; ``total`` is the number of
    frames read once the iteration ends (context frames included). ``digest_ref``: a function of the stacked
    reference frames (a hash) computed in the background too, off the thread that drives the device."""

    def __init__(self, pred_frames: Iterable[np.ndarray], ref_frames: Iterable[np.ndarray], *, context: int,
                 batch_size: int, frames_mode: str, pin_memory: bool,
                 digest_ref: Callable[[torch.Tensor], str] | None = None):
        self.total = 0
        self._pred = Prefetched(pred_frames, batch_size)
        self._ref = Prefetched(ref_frames, batch_size)
        self._context, self._batch_size, self._mode, self._pin = context, batch_size, frames_mode, pin_memory
        self._digest_ref = digest_ref

    def __iter__(self) -> Prefetched[HostBatch]:
        """The host batches; their decoding and stacking start at this call, in background threads."""
        return Prefetched(self._batches(), PREFETCH_BATCHES)

    def close(self) -> None:
        """Stop decoding (the pair is abandoned): the background threads end at their next frame."""
        self._pred.close()
        self._ref.close()

    def _batches(self) -> Iterator[HostBatch]:
        pending: list[tuple[int, np.ndarray, np.ndarray]] = []
        for index, pred, ref in self._aligned():
            self.total = index + 1
            if index < self._context:
                continue
            pending.append((index, pred, ref))
            if len(pending) == self._batch_size:
                yield self._stack(pending)
                pending = []
        if pending:
            yield self._stack(pending)

    def _aligned(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(index, pred frame, ref frame) in lock-step; a frame-count mismatch is handled per ``frames_mode``."""
        index = 0
        while True:
            pred, ref = next(self._pred, None), next(self._ref, None)
            if pred is None and ref is None:
                return
            if pred is None or ref is None:
                if self._mode == "min":
                    return
                n_pred = index + (0 if pred is None else 1 + sum(1 for _ in self._pred))
                n_ref = index + (0 if ref is None else 1 + sum(1 for _ in self._ref))
                raise InputError(
                    f"prediction has {n_pred} frames, reference has {n_ref} (--frame-mismatch min scores the shorter length)"
                )
            yield index, pred, ref
            index += 1

    def _stack(self, pending: list[tuple[int, np.ndarray, np.ndarray]]) -> HostBatch:
        def stack(frames: list[np.ndarray]) -> torch.Tensor:
            shapes = {frame.shape for frame in frames}
            if len(shapes) > 1:
                raise InputError(f"frames of one clip differ in size: {sorted(shapes)}")
            # Stacked straight into page-locked memory, which lets the copy to the GPU run asynchronously
            # (non_blocking=True), without a second copy of the batch.
            dtype = torch.from_numpy(np.empty(0, frames[0].dtype)).dtype  # the frame may be read-only: not its view
            tensor = torch.empty((len(frames), *frames[0].shape), dtype=dtype, pin_memory=self._pin)
            np.stack(frames, out=tensor.numpy())
            return tensor

        ref = stack([ref for _, _, ref in pending])
        return HostBatch(
            frame_index=np.array([index for index, _, _ in pending], dtype=np.int64),
            pred=stack([pred for _, pred, _ in pending]),
            ref=ref,
            ref_digest=self._digest_ref(ref) if self._digest_ref else None,
        )
