"""The run driver's loop on its own: batches, late results, plan order, unreadable inputs, the plan's checks."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from foresight_eval.driver import RunPlan, Task, run_plan
from foresight_eval.errors import InputError, UsageError


@dataclass
class Row:
    video: str
    note: str = ""


def test_batches_late_results_and_plan_order():
    """A callable that returns each batch's results one batch late (as generate's writers do) and the rest
    from finish: every item comes back once, in plan order, and each rank's extra travels along."""
    plan = RunPlan(["c", "a", "d", "b", "e"], key=lambda name: name)
    calls, held, reported = [], [], []

    def score(tasks: list[Task[str]]) -> list[Row]:
        calls.append([task.item for task in tasks])
        done = list(held)
        held[:] = [Row(task.item) for task in tasks]
        return done[::-1]

    gathered = run_plan(plan, score, result_key=lambda row: row.video, batch_size=2, finish=lambda: list(held),
                        on_start=lambda total: reported.append(total), on_result=lambda row: reported.append(row.video),
                        rank_extra=lambda: {"seconds": 1.0})
    assert calls == [["c", "a"], ["d", "b"], ["e"]]
    assert [row.video for row in gathered.results] == ["c", "a", "d", "b", "e"]
    assert reported == [5, "a", "c", "b", "d", "e"]  # as they came back
    assert gathered.rank_extras == [{"seconds": 1.0}]


def test_an_unreadable_input_reaches_the_callable_as_a_problem():
    def hashes(name: str) -> dict:
        if name == "locked":
            raise PermissionError(13, "Permission denied")
        if name == "fifo":
            raise InputError("fifo: a named pipe (FIFO), not a regular file")
        return {"pred": {name: "0" * 64}}

    seen = {}

    def score(tasks):
        seen.update({task.item: (task.inputs, task.problem) for task in tasks})
        return [Row(task.item) for task in tasks]

    gathered = run_plan(RunPlan(["ok", "locked", "fifo"], key=lambda name: name), score,
                        result_key=lambda row: row.video, hash_inputs=hashes)
    assert seen["ok"] == ({"pred": {"ok": "0" * 64}}, None)
    assert seen["locked"] == ({}, "cannot read input: [Errno 13] Permission denied")
    assert seen["fifo"] == ({}, "fifo: a named pipe (FIFO), not a regular file")
    assert [row.inputs for row in gathered.results] == [{"pred": {"ok": "0" * 64}}, {}, {}]


def test_the_plan_refuses_shared_keys_and_metrics_both_run_and_skipped():
    with pytest.raises(ValueError, match=r"share the keys \['a'\]"):
        RunPlan(["a", "b", "a"], key=lambda name: name)
    with pytest.raises(ValueError, match=r"\['fvd'\] are both run and skipped"):
        RunPlan([], key=str, metrics={"fvd": {}}, skipped={"fvd": "no weights"})
    assert RunPlan([], key=str, metrics={"psnr": {"params": {}}}, settings={"options": {"context": 2}}).header == \
        {"metrics": {"psnr": {"params": {}}}, "options": {"context": 2}}
    with pytest.raises(UsageError, match=r"^resume needs the run folder of the interrupted run \(run_dir\)"):
        run_plan(RunPlan(["a"], key=str), lambda tasks: [], resume=True)


def test_the_three_entry_points_share_the_driver_and_engine_and_latents_are_independent():
    from tests.test_architecture import import_graph

    graph = import_graph()
    for module in ("foresight_eval.engine", "foresight_eval.latents", "foresight_eval.inference.pipeline"):
        assert "foresight_eval.driver" in graph[module], module
    assert "foresight_eval.latents" not in graph["foresight_eval.engine"]
    assert "foresight_eval.engine" not in graph["foresight_eval.latents"]
    assert "foresight_eval.latent_pairs" in graph["foresight_eval.engine"]


def test_run_phases_record_where_a_runs_time_went(fixtures_dir, tmp_path):
    """manifest.timings: start_up (the process's age at the run's start), then each phase in the order it
    ended; together no more than the process's own age at the end."""
    from foresight_eval.driver import RunPhases, process_age
    from foresight_eval.engine import score

    run = score(fixtures_dir / "preds" / "blur_mild", fixtures_dir / "refs", ["psnr"], device="cpu")
    (phases,) = run.manifest["timings"]["ranks"]
    assert list(phases) == ["start_up", "setup", "scoring", "gather", "merge"]
    assert all(seconds >= 0 for seconds in phases.values()) and phases["scoring"] > 0
    assert sum(phases.values()) <= process_age() + 0.05  # /proc's 10 ms ticks
    assert "start_up" in RunPhases.DEFINITION and run.manifest["timings"]["definition"] == RunPhases.DEFINITION
