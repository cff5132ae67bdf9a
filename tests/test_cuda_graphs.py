"""The CUDA-graph cache of metrics (foresight_eval.metrics.graphs): when it captures, replays, evicts and gives
up. The capture itself needs a GPU (tests/test_gpu.py holds replays to eager runs there); here a stand-in
capture records what would be captured, so the policy runs on the CPU."""

from __future__ import annotations

import pytest
import torch

from foresight_eval.metrics import graphs
from foresight_eval.metrics.graphs import CaptureFailed, Captured, GraphedFunction

HELD = 100  # bytes a stand-in graph holds


class OnTheCPU(GraphedFunction):
    """Graphs "run" on the CPU: the stand-in capture below replaces CUDA's; graphs may hold 10 stand-ins."""

    @staticmethod
    def graphs_run_on(tensor: torch.Tensor) -> bool:
        return True

    @staticmethod
    def memory_budget(device: torch.device) -> int:
        return 10 * HELD


@pytest.fixture(autouse=True)
def no_graphs_held(monkeypatch):
    """Each test counts the memory of its own graphs only."""
    monkeypatch.setattr(graphs, "_held_bytes", type(graphs._held_bytes)())


def scaled(x: torch.Tensor, *, by: float) -> torch.Tensor:
    return x * by


@pytest.fixture
def captures():
    """A stand-in capture: records the signature; its replays add 100 (so a replay is told from a run)."""
    captured = []

    def capture(fn, tensors, static):
        captured.append((tuple(t.shape for t in tensors), tuple(sorted(static.items()))))
        inputs = tuple(t.clone() for t in tensors)

        def replay(new):
            for held, tensor in zip(inputs, new):
                held.copy_(tensor)
            return fn(*inputs, **static) + 100

        return Captured(replay, fn(*tensors, **static), HELD)

    return captured, capture


def test_a_signature_is_captured_on_its_second_call_and_replayed_after(captures):
    captured, capture = captures
    graphed = OnTheCPU(scaled, capture=capture)
    x = torch.ones(3)
    assert graphed(x, by=2.0).tolist() == [2.0] * 3 and captured == []  # first sight: run as it is
    assert graphed(x, by=2.0).tolist() == [2.0] * 3 and len(captured) == 1  # second: captured, warm-up's result
    assert graphed(x * 3, by=2.0).tolist() == [106.0] * 3  # replayed on the new values
    assert graphed(x, by=5.0).tolist() == [5.0] * 3 and len(captured) == 1  # a static argument is in the key
    assert graphed(torch.ones(4), by=2.0).tolist() == [2.0] * 4 and len(captured) == 1  # so is the shape


def clip_batches(size: int, frames: int = 83, batch: int = 16) -> list[torch.Tensor]:
    """Stand-ins for a clip's batches of one frame size: its full batches, then its short last one."""
    full, short = divmod(frames, batch)
    return [torch.ones(size, 1)] * full + [torch.ones(size, short)]


def test_a_cycle_of_more_signatures_than_places_replays_the_most_used_and_captures_no_more(captures):
    """Five frame sizes in turn, each clip with a short last batch: ten signatures, eight places. Least recently
    used out would capture each anew at every batch (more costly than running it); kept by use, the full batches
    and three short ones replay and nothing is captured after the first cycles."""
    captured, capture = captures
    graphed = OnTheCPU(scaled, most_graphs=8, capture=capture)
    cycle = [batch for size in (4, 5, 6, 7, 8) for batch in clip_batches(size)]
    for x in cycle * 5:
        graphed(x, by=1.0)
    assert len(captured) == 8
    replayed = [graphed(x, by=1.0)[0, 0] == 101 for x in cycle]
    assert len(captured) == 8
    assert replayed == ([True] * 6) * 3 + ([True] * 5 + [False]) * 2


def test_a_signature_used_more_than_the_least_used_graph_takes_its_place(captures):
    captured, capture = captures
    graphed = OnTheCPU(scaled, most_graphs=3, capture=capture)
    rare, filler, common, new = (torch.ones(n) for n in (1, 2, 3, 4))
    for x in (rare, rare, filler, filler, common, common, common):
        graphed(x, by=1.0)
    assert len(captured) == 3
    assert graphed(new, by=1.0)[0] == 1 and graphed(new, by=1.0)[0] == 1  # 2 calls: as many as `rare`, kept out
    assert len(captured) == 3
    assert graphed(new, by=1.0)[0] == 1 and len(captured) == 4  # its third call: captured in `rare`'s place
    assert graphed(new, by=1.0)[0] == 101 and graphed(common, by=1.0)[0] == 101


def clip_signatures(size: int, frames: int, batch: int = 16) -> list[torch.Tensor]:
    """Stand-ins for the batches one function sees of a clip of one frame size whose first batch differs from
    the others (the motion masks' first frame seeds the background: 15 frames, then 16, then the rest)."""
    first, rest = batch - 1, frames - batch
    return [torch.ones(size, first)] + [torch.ones(size, min(batch, left)) for left in range(rest, 0, -batch)]


def test_clips_of_mixed_lengths_and_sizes_settle_without_captures_after_the_second_run(captures):
    """24 clips of 60-130 frames at three sizes, each batch called for both sides: 22 signatures, 16 places.
    The counts of the short batches are close to each other; counts that age (halved every 4 x places calls)
    made them cross back and forth, 16 captures in every run, each more costly than the eager call it replaces."""
    captured, capture = captures
    lengths = torch.randint(60, 131, (24,), generator=torch.Generator().manual_seed(0)).tolist()
    run = [x for index, length in enumerate(lengths) for x in clip_signatures((4, 5, 6)[index % 3], length)
           for _side in range(2)]
    graphed = OnTheCPU(scaled, capture=capture)  # the default places
    graphed.memory_budget = lambda device: 100 * HELD
    for _ in range(2):  # a signature seen once in the first run is captured at its second call, in the second
        for x in run:
            graphed(x, by=1.0)
    settled = len(captured)
    for _ in range(4):
        for x in run:
            graphed(x, by=1.0)
    assert settled > 16 and len(captured) == settled


def test_graphs_hold_at_most_their_share_of_memory_and_a_signature_past_it_runs_eagerly(captures):
    captured, capture = captures
    graphed = OnTheCPU(scaled, most_graphs=20, capture=capture)
    shapes = [torch.ones(n) for n in range(1, 13)]
    for x in shapes:
        graphed(x, by=1.0), graphed(x, by=1.0)
    assert len(captured) == 12 and graphs._held_bytes[torch.device("cpu")] == 10 * HELD  # two dropped at once
    assert [graphed(x, by=1.0)[0] for x in shapes] == [101] * 10 + [1, 1]  # replayed; eager past the budget
    assert len(captured) == 12  # and not captured again


def test_a_dropped_graph_gives_its_memory_back(captures):
    captured, capture = captures
    graphed = OnTheCPU(scaled, most_graphs=1, capture=capture)
    cpu = torch.device("cpu")
    graphed(torch.ones(1), by=1.0), graphed(torch.ones(1), by=1.0)
    for _ in range(3):
        graphed(torch.ones(2), by=1.0)  # its third call: more used, it takes the place
    assert len(captured) == 2 and graphs._held_bytes[cpu] == HELD

    def failing(fn, tensors, static):
        raise CaptureFailed("RuntimeError: operation not permitted when stream is capturing")

    graphed._capture = failing
    graphed(torch.ones(3), by=1.0)
    with pytest.warns(RuntimeWarning, match="capture failed"):
        for _ in range(3):
            graphed(torch.ones(3), by=1.0)  # displaces the graph, then fails: graphs off
    assert not graphed.capturing and graphs._held_bytes[cpu] == 0


def test_a_failed_capture_turns_graphs_off_with_a_warning():
    calls = []

    def failing(fn, tensors, static):
        calls.append(1)
        raise CaptureFailed("RuntimeError: operation not permitted when stream is capturing")

    graphed = OnTheCPU(scaled, capture=failing)
    x = torch.ones(2)
    graphed(x, by=2.0)
    with pytest.warns(RuntimeWarning, match="CUDA graph capture failed, running without graphs"):
        assert graphed(x, by=2.0).tolist() == [2.0, 2.0]
    assert graphed(x, by=2.0).tolist() == [2.0, 2.0] and calls == [1] and not graphed.capturing


def test_graphs_are_off_on_the_cpu_and_by_the_environment(captures, monkeypatch):
    captured, capture = captures
    on_cpu = GraphedFunction(scaled, capture=capture)
    for _ in range(3):
        assert on_cpu(torch.ones(2), by=2.0).tolist() == [2.0, 2.0]
    monkeypatch.setenv("FORESIGHT_EVAL_CUDA_GRAPHS", "0")
    switched_off = OnTheCPU(scaled, capture=capture)
    for _ in range(3):
        assert switched_off(torch.ones(2), by=2.0).tolist() == [2.0, 2.0]
    assert captured == []


def test_an_error_of_the_function_itself_reaches_the_caller_and_graphs_stay_on():
    """A bad argument fails the warm-up run inside the capture as it fails any call: raised as it is, not
    taken for an uncapturable function (which would turn graphs off for every later call)."""
    def checked(x: torch.Tensor, *, mode: str) -> torch.Tensor:
        if mode not in ("a", "b"):
            raise ValueError(f"unknown mode {mode!r}")
        return x * 2

    def capture(fn, tensors, static):  # as capture_cuda_graph: the warm-up runs first, outside the capture
        return Captured(lambda new: fn(*new, **static), fn(*tensors, **static), HELD)

    graphed = OnTheCPU(checked, capture=capture)
    for _ in range(3):  # first sight, then the capturing call
        with pytest.raises(ValueError, match="unknown mode"):
            graphed(torch.ones(2), mode="z")
    assert graphed.capturing


def test_metrics_that_replay_graphs_score_as_without_them(monkeypatch, lpips_weights):
    """tc, tc_delta, ssim, lpips, edge_f1's torch Canny and the motion IoUs' counts and comparisons through the
    engine, their graphed functions "on a GPU"
    (the stand-in capture replays through held input copies, as a CUDA graph reads its captured inputs): the
    values of a run with graphs off, to the bit. On the CPU tc takes OpenCV's SSIM, so its moments path (the
    GPU's) is forced here, and ssim's torch path."""
    from foresight_eval import ScoreOptions, score
    from foresight_eval.metrics import edges, motion, perceptual, structural, temporal
    from tests.conftest import FIXTURES

    captured: list[str] = []

    def capture(fn, tensors, static):
        captured.append(fn.__name__)
        inputs = tuple(t.clone() for t in tensors)

        def replay(new):
            for held, tensor in zip(inputs, new):
                held.copy_(tensor)
            return fn(*inputs, **static)

        return Captured(replay, fn(*tensors, **static), HELD)

    monkeypatch.setattr(graphs, "capture_cuda_graph", capture)
    for module, name in ((temporal, "_consecutive_ssim_graphed"), (edges, "_canny_candidates_graphed"),
                         (perceptual, "_lpips_graphed"), (structural, "_ssim_torch_graphed"),
                         (motion, "_running_counts_graphed"), (motion, "_binary_iou_graphed"),
                         (motion, "_weighted_iou_graphed")):
        monkeypatch.setattr(module, name, GraphedFunction(getattr(module, name).fn))  # no graphs left behind
    monkeypatch.setattr(GraphedFunction, "graphs_run_on", staticmethod(lambda tensor: True))
    monkeypatch.setattr(GraphedFunction, "memory_budget", staticmethod(lambda device: 100 * HELD))
    for module in (temporal, structural):
        monkeypatch.setattr(module, "ssim_takes_opencv", lambda frames, window_size: False)
    metrics = ["tc", "tc_delta", "ssim", "lpips", "edge_f1", "motion_iou", "motion_iou_weighted", "motion_iou_st"]

    def run():
        result = score(FIXTURES / "preds" / "shift_mild", FIXTURES / "refs", metrics,
                       params={"edge_f1": {"detector": "torch"}}, options=ScoreOptions(context=4, batch_size=5),
                       device="cpu", resources={"cache_dir": None})
        assert all(pair.ok for pair in result.pairs)
        return [pair.values for pair in result.pairs]

    graphed = run()
    assert set(captured) == {"consecutive_ssim_of_moments", "canny_candidates", "_lpips_of_batch", "_ssim_torch",
                             "running_counts", "binary_iou", "weighted_iou"}
    monkeypatch.setenv("FORESIGHT_EVAL_CUDA_GRAPHS", "0")
    assert graphed == run()
