"""metrics.base.over_threads: per-frame CPU work spread over the run's torch thread count, in order."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from foresight_eval.metrics.base import over_threads


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_items_keep_their_order_and_share_the_threads(torch_threads):
    torch_threads(2)
    seen = set()

    def work(item):
        seen.add(threading.get_ident())
        time.sleep(0.05 * (3 - item))  # the first items finish last
        return item * 10

    assert over_threads(work, [0, 1, 2, 3]) == [0, 10, 20, 30]
    assert len(seen) == 2 and threading.get_ident() not in seen


def test_one_torch_thread_runs_in_the_calling_thread(torch_threads):
    torch_threads(1)
    seen = []
    assert over_threads(lambda item: seen.append(threading.get_ident()) or item, range(3)) == [0, 1, 2]
    assert set(seen) == {threading.get_ident()}


def test_an_exception_is_raised_as_the_loop_would_raise_it(torch_threads):
    torch_threads(2)

    def work(item):
        if item == 2:
            raise ValueError("frame 2")
        return item

    with pytest.raises(ValueError, match="frame 2"):
        over_threads(work, range(4))


def test_opencv_runs_on_one_thread_meanwhile_and_as_before_after(torch_threads):
    """The threads are the parallelism: OpenCV's own pool inside each of them only oversubscribes. A call that
    starts and ends within another one (two threads) leaves OpenCV on one thread until the outer one ends,
    then as it was, also after a failure."""
    import cv2

    torch_threads(2)
    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        outer_entered, inner_ended = threading.Event(), threading.Event()
        seen_after_inner: list[int] = []

        def outer(item):
            if item == 0:
                outer_entered.set()
                assert inner_ended.wait(10)
                seen_after_inner.append(cv2.getNumThreads())
            return cv2.getNumThreads()

        def inner():
            assert outer_entered.wait(10)
            inner_values.extend(over_threads(lambda item: cv2.getNumThreads(), range(2)))
            inner_ended.set()

        inner_values: list[int] = []
        other = threading.Thread(target=inner)
        other.start()
        assert over_threads(outer, range(2)) == [1, 1]
        other.join(10)
        assert inner_values == [1, 1] and seen_after_inner == [1]
        assert cv2.getNumThreads() == 3

        def failing(item):
            raise ValueError("frame")

        with pytest.raises(ValueError):
            over_threads(failing, range(2))
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)
