"""Every registered metric through the shared contract test (foresight_eval.testing), and the registry's
validation of metric declarations and parameters."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from foresight_eval import ConsecutivePairMetric, FrameBatch, FrameBatchMetric, FrameMetric, Metric, MetricInfo, RunContext
from foresight_eval.errors import MetricDeclarationError, UsageError
from foresight_eval.io.annotations import load_spatial_resources
from foresight_eval.metrics import registry
from foresight_eval.metrics.edges import EdgeF1
from foresight_eval.metrics.latent import LatentMetric
from foresight_eval.metrics.registry import create, metric_classes, validate_metric_class
from foresight_eval.testing import check_latent_metric, check_metric
from tests.conftest import FIXTURES
from tests.test_feature_consistency import write_tiny_dinov2
from tests.test_fid_kid import write_random_inception
from tests.test_fvd import write_random_i3d
from tests.test_fvd_videomae import write_tiny_videomae
from tests.test_subject_consistency import FILENAME as DINO_FILENAME, random_dino_state

FRAME_METRICS = sorted(n for n, c in metric_classes().items() if c.info.inputs == "frames")
LATENT_METRICS = sorted(n for n, c in metric_classes().items() if c.info.inputs == "latents")
# Metrics that read per-clip annotations are checked on the annotated fixture clips.
ANNOTATED = {"box_iou", "mask_iou", "map50", "map50_95"}


# Set metrics run their feature network on every side and window: small windows keep them quick here.
PARAMS = {"fvd": {"frames": 9, "resamples": 20}, "fvd_videomae": {"frames": 4, "resamples": 20},
          "fid": {"resamples": 20}, "kid": {"resamples": 20, "subset_size": 8, "subsets": 5}}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """Seeded random weights, in the standard files, for every metric that needs a network."""
    root = tmp_path_factory.mktemp("weights")
    write_tiny_dinov2(root / "dinov2-small")
    write_random_i3d(root)
    write_tiny_videomae(root / "videomae-base")
    return root


@pytest.fixture(scope="module")
def network_home(torch_home) -> Path:
    """The session's $TORCH_HOME (LPIPS backbones) plus InceptionV3 and DINO v1 in its hub cache."""
    write_random_inception(torch_home)
    torch.save(random_dino_state(), torch_home / "hub" / "checkpoints" / DINO_FILENAME)
    return torch_home


def test_every_builtin_metric_is_covered():
    assert set(FRAME_METRICS) | set(LATENT_METRICS) == set(metric_classes())
    assert len(FRAME_METRICS) >= 20 and len(LATENT_METRICS) >= 8


@pytest.mark.parametrize("name", FRAME_METRICS)
def test_frame_metric_keeps_the_contract(name, tmp_path, network_home, weights_dir, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(network_home))
    context = RunContext(weights_dir=weights_dir)
    clips = None
    if name in ANNOTATED:
        context.resources = load_spatial_resources(
            ref_annotations=FIXTURES / "coco" / "refs.json",
            pred_detections=FIXTURES / "coco" / "detections" / "blur_mild.json",
            pred_masks=None if name != "mask_iou" else FIXTURES / "refs")
        clips = [(key, FIXTURES / "preds" / "blur_mild" / f"{key}.mp4", FIXTURES / "refs" / f"{key}.mp4")
                 for key in ("clip00", "clip01")]
    check_metric(name, workdir=tmp_path, context=context, clips=clips, params=PARAMS.get(name))


@pytest.mark.parametrize("name", LATENT_METRICS)
def test_latent_metric_keeps_the_contract(name):
    # The skill of a forecast is relative to persisting the last context step: it needs one.
    check_latent_metric(name, params={"context": 1} if name == "latent_cosine_skill" else None)


class _Leaky(FrameMetric):
    """Keeps a running offset across clips: the contract test must catch it."""

    info = MetricInfo(name="leaky_test_metric", description="test", direction="lower")

    def setup(self, context: RunContext) -> None:
        super().setup(context)
        self.offset = 0.0

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        self.offset += 1.0
        return (batch.pred - batch.ref).abs().flatten(1).mean(dim=1) + self.offset


def test_the_contract_test_catches_a_metric_whose_value_depends_on_batching(tmp_path):
    with pytest.raises(AssertionError, match="batch"):
        check_metric(_Leaky, workdir=tmp_path)


def test_the_contract_test_passes_a_well_behaved_plugin(tmp_path):
    class MaxError(FrameMetric):
        info = MetricInfo(name="max_error_test_metric", description="test", direction="lower")

        def per_frame(self, batch: FrameBatch) -> torch.Tensor:
            return (batch.pred - batch.ref).abs().flatten(1).amax(dim=1)

    check_metric(MaxError, workdir=tmp_path)


class _OldEdgeF1(EdgeF1):
    """EdgeF1 as it was before per_frame took the batch: the batch kept on self for per_frame to reach."""

    def update(self, batch: FrameBatch) -> torch.Tensor | None:
        self._batch = batch
        return super().update(batch)


class _KeepsReferenceFrames(FrameMetric):
    info = MetricInfo(name="keeps_ref_test_metric", description="test", direction="lower")

    def reset(self) -> None:
        super().reset()
        self.seen: dict[str, list[torch.Tensor]] = {"ref": []}

    def per_frame(self, batch: FrameBatch) -> torch.Tensor:
        self.seen["ref"].append(batch.ref)  # the batch's own tensor, kept past the batch
        return (batch.pred - batch.ref).abs().flatten(1).mean(dim=1)


@pytest.mark.parametrize("metric, where", [(_OldEdgeF1, "self._batch"), (_KeepsReferenceFrames, "self.seen['ref'][0]")])
def test_the_contract_test_catches_a_metric_that_keeps_the_batch(metric, where, tmp_path):
    with pytest.raises(AssertionError, match=f"keeps the batch it was given on self \\({re.escape(where)}\\)"):
        check_metric(metric, workdir=tmp_path)


def _mean_error(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (pred - ref).abs().flatten(1).mean(dim=1)


def test_a_plugin_with_the_old_per_frame_signature_still_scores(tmp_path):
    """per_frame(self, pred, ref), as plugins were written before per_frame took the batch: recognised once,
    when the class is defined (a DeprecationWarning pointing at it), then called the old way."""
    with pytest.warns(DeprecationWarning, match=r"OldStyle.per_frame\(self, pred, ref\) is deprecated") as caught:
        class OldStyle(FrameMetric):
            info = MetricInfo(name="old_style_test_metric", description="test", direction="lower")

            def per_frame(self, pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
                return _mean_error(pred, ref)
    assert caught[0].filename == __file__  # points at the definition to change

    class NewStyle(FrameMetric):
        info = MetricInfo(name="new_style_test_metric", description="test", direction="lower")

        def per_frame(self, batch: FrameBatch) -> torch.Tensor:
            return _mean_error(batch.pred, batch.ref)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a subclass inheriting the old form is called the same way, unannounced
        class OldStyleChild(OldStyle):
            pass
    assert OldStyle._per_frame_takes_frames and OldStyleChild._per_frame_takes_frames
    assert not NewStyle._per_frame_takes_frames

    generator = torch.Generator().manual_seed(0)
    pred, ref = torch.rand(3, 3, 8, 8, generator=generator), torch.rand(3, 3, 8, 8, generator=generator)
    batch = FrameBatch("clip", pred, ref, torch.arange(1, 4), torch.arange(3))
    for metric in (OldStyle(), OldStyleChild(), NewStyle()):
        metric.reset()
        assert torch.equal(metric.update(batch), _mean_error(pred, ref))
    check_metric(OldStyle, workdir=tmp_path)


def test_frame_and_latent_metrics_are_siblings():
    """One common base; each family has only the hooks its driver calls."""
    for name, cls in metric_classes().items():
        assert issubclass(cls, Metric), name
        family, other = (FrameBatchMetric, LatentMetric) if cls.info.inputs == "frames" else (LatentMetric, FrameBatchMetric)
        assert issubclass(cls, family) and not issubclass(cls, other), name
    assert issubclass(ConsecutivePairMetric, FrameBatchMetric) and issubclass(FrameMetric, FrameBatchMetric)
    latent = create("cka")
    assert not any(hasattr(latent, hook) for hook in ("reset", "update", "compute", "per_frame"))
    assert not hasattr(create("psnr"), "score")


def _declared(base: type = FrameMetric, **overrides):
    attributes = {"info": MetricInfo(name="declared_test_metric", description="test", direction="lower"),
                  "defaults": {}, "choices": {},
                  "per_frame": lambda self, batch: (batch.pred - batch.ref).abs().flatten(1).mean(dim=1)}
    attributes.update(overrides)
    return type("Declared", (base,), attributes)


@pytest.mark.parametrize("overrides, message", [
    ({"info": MetricInfo(name="x", description="d", direction="up")}, "direction 'up'"),
    ({"defaults": {}, "choices": {"mode": ("a", "b")}}, "choices for 'mode', which has no default"),
    ({"defaults": {"mode": "c"}, "choices": {"mode": ("a", "b")}}, "default mode='c' is not one of its choices"),
    ({"defaults": {"path": Path("x")}}, "defaults must be JSON values"),
    ({"defaults": {"cap": float("inf")}}, "defaults must be JSON values"),
    ({"base": Metric}, r"a metric of frames implements reset, update, compute; missing reset, update, compute "
                       r"\(derive from FrameBatchMetric\)"),
    ({"info": MetricInfo(name="x", description="d", direction="lower", inputs="latents")},
     r"missing score \(derive from LatentMetric\)"),
])
def test_a_wrongly_declared_metric_is_refused_at_registration(overrides, message):
    with pytest.raises(MetricDeclarationError, match=message):
        validate_metric_class(_declared(**overrides))
    with pytest.raises(MetricDeclarationError):
        registry.register(_declared(**overrides))
    assert "declared_test_metric" not in metric_classes() and "x" not in metric_classes()


@pytest.mark.parametrize("name, params, message", [
    ("psnr", {"data_range": "abc"}, "psnr.data_range must be a number, got 'abc'"),
    ("mse", {"nonsense": 1}, "has no parameter 'nonsense'"),
    ("ssim", {"moode": "skimage"}, "did you mean 'mode'"),
    ("edge_f1", {"sigma": True}, "edge_f1.sigma must be a number"),
    ("frozen", {"min_run": 2.5}, "frozen.min_run must be a whole number"),
    ("psnrr", {}, "did you mean 'psnr'"),
])
def test_bad_parameters_and_names_are_one_usage_error(name, params, message):
    with pytest.raises(UsageError, match=message):
        create(name, **params)


def test_parameters_are_coerced_to_their_defaults_type():
    assert create("psnr", data_range=255).params["data_range"] == 255.0
    assert isinstance(create("psnr", data_range=255).params["data_range"], float)
    assert create("lpips", version=0.1).params["version"] == "0.1"
    assert create("frozen", min_run=4.0).params["min_run"] == 4


def test_a_bad_parameter_on_the_command_line_exits_2_before_scoring(tmp_path):
    from foresight_eval.cli import main

    result = CliRunner().invoke(main, ["score", str(FIXTURES / "preds" / "blur_mild"), str(FIXTURES / "refs"),
                                       "-m", "psnr", "-p", "psnr.data_range=abc"])
    assert result.exit_code == 2, result.output
    assert "psnr.data_range must be a number" in result.output


def test_an_entry_point_that_registers_nothing_is_reported(monkeypatch):
    class EntryPoint:
        name, value, dist = "empty_plugin", "empty_module:nothing", None

        def load(self):
            return object()

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr(registry, "_plugin_errors", {})
    monkeypatch.setattr(registry, "entry_points", lambda group: [EntryPoint()])
    errors = registry.plugin_errors()
    assert "registered no metric" in errors["empty_plugin"]


def test_every_weight_file_can_be_fetched_into_the_weights_folder():
    """`weights fetch NAME --weights-dir DIR` calls every spec's fetch with the folder."""
    import inspect

    from foresight_eval.weights import weight_specs

    metric_classes()  # importing the metrics registers their weight files
    for name, spec in weight_specs().items():
        assert "weights_dir" in inspect.signature(spec.fetch).parameters, name
