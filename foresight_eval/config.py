"""A scoring run's configuration: everything `foresight-eval score` takes from the user, as one object
(:class:`RunConfig`; :class:`LatentsConfig` and :class:`PhysicsIQConfig` are the same for `latents` and
`physics-iq`: ``latents --config runs/x/config.yaml`` replays a latents run).

A :class:`RunConfig` is built from the command line or from a YAML file (``score --config run.yaml``), and
every run folder it writes gets it back as ``config.yaml``, so ``score --config runs/x/config.yaml`` replays
the run. The keys are the long option names with ``_`` for ``-`` (``batch_size``, ``ref_annotations``,
``preds_seed``); ``metrics`` is a list, ``params`` a mapping metric -> {key: value}, ``extra`` a mapping
name -> figure. Relative paths are taken against ``cwd`` (recorded in every ``config.yaml``; in a file
without it, the folder the command runs in, as on the command line), so a replay works from anywhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from foresight_eval.errors import UsageError, did_you_mean, field_ref
from foresight_eval.io.files import write_atomic
from foresight_eval.options import current_option_names

CONFIG_FILE = "config.yaml"

# field -> the type it takes in a file; "path?": a file or folder, "name|path?": a name or a file (a path
# when it exists relative to cwd), "strs": a list of strings (one string is a list of one)
_KINDS = {
    "preds": "path?", "refs": "path?", "preds_seed": "paths", "seeds": "bool", "metrics": "strs?",
    "params": "params", "profile": "name|path?", "context": "int", "frame_mismatch": "str", "resize": "str",
    "batch_size": "int", "fps": "float?", "fps_mismatch": "str", "horizon_seconds": "float?", "strict": "bool",
    "device": "str", "weights_dir": "path?", "cache_dir": "path?", "no_cache": "bool", "frame_cache": "str",
    "workers": "int?",
    "bootstrap_resamples": "int", "seed": "int",
    "extra": "figures", "extra_file": "path?", "ref_annotations": "path?", "pred_detections": "path?",
    "pred_masks": "path?", "latents": "bool", "latents_reduce": "str?", "latents_spatial": "str?",
    "limit": "int?", "include": "strs", "exclude": "strs", "categories": "name|path?", "out": "path?",
    "cwd": "path?",
}
_DESCRIPTIONS = {"path": "a path (string)", "paths": "a list of paths", "bool": "true or false",
                 "strs": "a list of strings", "params": "a mapping metric -> {parameter: value}",
                 "name|path": "a string", "int": "an integer", "float": "a number", "str": "a string",
                 "figures": "a mapping name -> value"}
# Categories given by the clip key, not by a file (foresight_eval.study.load_categories).
_CATEGORY_RULES = ("folder:", "regex:")
C = TypeVar("C", bound="_ConfigFile")


class _ConfigFile:
    """What every command's config does: built from a file's mapping or a YAML file, relative paths taken
    against ``cwd``, written back as ``config.yaml``. A subclass is a frozen dataclass with a ``cwd`` field;
    ``KINDS`` maps each field to the type it takes in a file, ``COMMAND`` names the command it replays."""

    COMMAND: ClassVar[str]
    KINDS: ClassVar[dict[str, str]]
    cwd: Path

    @classmethod
    def from_mapping(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
        """A config from a file's mapping; an unknown key or a value of the wrong type is a UsageError
        naming ``source`` and the key."""
        return cls(**checked_values(values, source, cls.KINDS))

    @classmethod
    def from_yaml(cls: type[C], path: str | Path, overrides: Mapping[str, Any] | None = None) -> C:
        """The config in the YAML file ``path``, with ``overrides`` (already typed values, e.g. from the
        command line) taking precedence over the file's: ``params`` and ``extra`` merge key by key, every
        other field is replaced."""
        return cls(**merge(read_config_file(path, cls.KINDS), overrides or {}))

    def resolve(self, path: str | Path) -> Path:
        """``path`` taken against :attr:`cwd` (absolute paths as they are)."""
        return Path(self.cwd) / path

    def _name_or_path(self, value: str | None) -> str | None:
        """A profile or categories value: a file (taken against cwd) when one exists there, else as given."""
        if value is None or value.startswith(_CATEGORY_RULES) or not self.resolve(value).exists():
            return value
        return str(self.resolve(value))

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON values, paths as given, and the cwd they are relative to."""
        data = asdict(self)  # type: ignore[call-overload]
        for name, value in data.items():
            if isinstance(value, Path):
                data[name] = str(value)
            elif isinstance(value, tuple):
                data[name] = [str(item) for item in value]
        data["cwd"] = str(Path(self.cwd).absolute())
        return data

    def write(self, run_dir: str | Path) -> Path:
        """``config.yaml`` in ``run_dir`` (atomically); ``COMMAND --config`` on it replays the run."""
        path = Path(run_dir) / CONFIG_FILE
        header = (f"# foresight-eval run config: `foresight-eval {self.COMMAND} --config config.yaml` "
                  "replays this run.\n")
        write_atomic(path, header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))
        return path


@dataclass(frozen=True)
class RunConfig(_ConfigFile):
    """Everything a scoring run takes from the user (see the module docstring); the defaults are
    `foresight-eval score`'s."""

    COMMAND: ClassVar[str] = "score"
    KINDS: ClassVar[dict[str, str]] = _KINDS

    preds: Path | None = None
    refs: Path | None = None
    preds_seed: tuple[Path, ...] = ()  # more prediction sets (seeds) of the model; preds is the first
    seeds: bool = False  # preds holds one folder per seed
    metrics: tuple[str, ...] | None = None  # None: every default metric that can run here
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    profile: str | None = None
    context: int = 0
    frame_mismatch: str = "error"
    resize: str = "error"
    batch_size: int = 16
    fps: float | None = None
    fps_mismatch: str = "error"
    horizon_seconds: float | None = None
    strict: bool = False
    device: str = "auto"
    weights_dir: Path | None = None
    cache_dir: Path | None = None  # None: the user cache folder
    no_cache: bool = False
    frame_cache: str = "auto"  # options.FRAME_CACHE_MODES
    workers: int | None = None  # None: by device (foresight_eval.workers)
    bootstrap_resamples: int = 2000
    seed: int = 0  # of the bootstrap resampling
    extra: dict[str, Any] = field(default_factory=dict)
    extra_file: Path | None = None
    ref_annotations: Path | None = None
    pred_detections: Path | None = None
    pred_masks: Path | None = None
    latents: bool = False
    latents_reduce: str | None = None
    latents_spatial: str | None = None
    limit: int | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    categories: str | None = None
    out: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)  # what relative paths are relative to

    def score_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`foresight_eval.engine.score` for this config (reads the annotation,
        detection, mask and extra-figure files it names)."""
        from foresight_eval.io.annotations import load_spatial_resources
        from foresight_eval.io.latents import LatentOptions
        from foresight_eval.options import ScoreOptions
        from foresight_eval.stats import BootstrapConfig
        from foresight_eval.study import Study, seed_folders

        if self.preds is None or self.refs is None:
            raise UsageError(f"give {field_ref('preds')} and {field_ref('refs')} (in a config file: preds and refs)")
        path = lambda value: None if value is None else self.resolve(value)  # noqa: E731
        preds = self.resolve(self.preds)
        if self.seeds:
            if self.preds_seed:
                raise UsageError(f"give either {field_ref('seeds')} (preds holds the seed folders) or {field_ref('preds_seed')}, not both")
            prediction_input: Any = seed_folders(preds)
        else:
            prediction_input = [preds, *map(self.resolve, self.preds_seed)] if self.preds_seed else preds
        return dict(
            preds=prediction_input, refs=self.resolve(self.refs),
            metrics=list(self.metrics) if self.metrics is not None else None,
            params={name: dict(values) for name, values in self.params.items()},
            options=ScoreOptions(context=self.context, frame_mismatch=self.frame_mismatch, resize=self.resize,  # type: ignore[arg-type]
                                 batch_size=self.batch_size, fps=self.fps, fps_mismatch=self.fps_mismatch,  # type: ignore[arg-type]
                                 horizon_seconds=self.horizon_seconds, workers=self.workers),
            strict=self.strict, device=self.device, weights_dir=path(self.weights_dir),
            bootstrap=BootstrapConfig(n_resamples=self.bootstrap_resamples, seed=self.seed),
            extra={**read_extra_file(path(self.extra_file)), **self.extra},
            resources={**load_spatial_resources(path(self.ref_annotations), path(self.pred_detections),
                                                path(self.pred_masks)), **self._cache_resource()},
            run_dir=path(self.out), profile=self._name_or_path(self.profile),
            latents=LatentOptions(reduce=self.latents_reduce, spatial=self.latents_spatial, sidecars_only=True)
            if self.latents else None,
            study=Study(limit=self.limit, include=self.include, exclude=self.exclude,
                        categories=self._name_or_path(self.categories)),
        )

    def _cache_resource(self) -> dict[str, Path | str | None]:
        """``resources["cache_dir"]`` of the run (None turns the cache off; left out, the user cache folder) and
        ``resources["frame_cache"]`` (feature_cache.open_run_cache)."""
        if self.no_cache:
            return {"cache_dir": None}
        folder = {} if self.cache_dir is None else {"cache_dir": self.resolve(self.cache_dir)}
        return {**folder, "frame_cache": self.frame_cache}

    def run(self, **kwargs: Any):
        """Score this config (``kwargs``: further arguments of ``score``, e.g. ``on_pair``, ``resume``) and
        write ``config.yaml`` into the run folder; the :class:`~foresight_eval.results.RunResult`, or None
        on a rank other than 0 of a distributed run."""
        from foresight_eval.engine import score

        result = score(**self.score_kwargs(), **kwargs)
        if result is not None and self.out is not None:
            self.write(self.resolve(self.out))
        return result



@dataclass(frozen=True)
class LatentsConfig(_ConfigFile):
    """Everything a `foresight-eval latents` run takes (keys as the long options; A and B as ``a`` and ``b``);
    every latents run folder gets it as ``config.yaml``."""

    COMMAND: ClassVar[str] = "latents"
    KINDS: ClassVar[dict[str, str]] = {
        "a": "path?", "b": "path?", "metrics": "strs?", "params": "params", "reduce": "str?", "spatial": "str?",
        "key": "str?", "sidecars": "bool", "strict": "bool", "device": "str", "bootstrap_resamples": "int",
        "seed": "int", "extra": "figures", "extra_file": "path?", "out": "path?", "cwd": "path?",
    }

    a: Path | None = None
    b: Path | None = None
    metrics: tuple[str, ...] | None = None  # None: every default latent metric
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    reduce: str | None = None
    spatial: str | None = None
    key: str | None = None
    sidecars: bool = False
    strict: bool = False
    device: str = "auto"
    bootstrap_resamples: int = 2000
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    extra_file: Path | None = None
    out: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)

    def latents_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`foresight_eval.latents.latents` for this config."""
        from foresight_eval.io.latents import LatentOptions
        from foresight_eval.stats import BootstrapConfig

        if self.a is None or self.b is None:
            raise UsageError("give A and B, on the command line or as a and b in --config")
        return dict(
            a=self.resolve(self.a), b=self.resolve(self.b),
            metrics=list(self.metrics) if self.metrics is not None else None,
            params={name: dict(values) for name, values in self.params.items()},
            options=LatentOptions(reduce=self.reduce, spatial=self.spatial, key=self.key, sidecars_only=self.sidecars),
            strict=self.strict, device=self.device,
            bootstrap=BootstrapConfig(n_resamples=self.bootstrap_resamples, seed=self.seed),
            extra={**read_extra_file(None if self.extra_file is None else self.resolve(self.extra_file)), **self.extra},
            run_dir=None if self.out is None else self.resolve(self.out),
        )

    def run(self, **kwargs: Any):
        """Run :func:`~foresight_eval.latents.latents` on this config (``kwargs``: its further arguments) and
        write ``config.yaml`` into the run folder; the run, or None on a rank other than 0."""
        from foresight_eval.latents import latents

        result = latents(**self.latents_kwargs(), **kwargs)
        if result is not None and self.out is not None:
            self.write(self.resolve(self.out))
        return result


@dataclass(frozen=True)
class PhysicsIQConfig(_ConfigFile):
    """Everything a `foresight-eval physics-iq` run takes (keys as the long options; PREDS and REFS as
    ``preds`` and ``refs``); its ``--out`` folder gets it as ``config.yaml``."""

    COMMAND: ClassVar[str] = "physics-iq"
    KINDS: ClassVar[dict[str, str]] = {
        "preds": "path?", "refs": "path?", "ref_take2": "path?", "categories": "path?", "fps": "float?",
        "context": "int", "frame_mismatch": "str", "resize": "str", "batch_size": "int", "device": "str",
        "out": "path?", "cwd": "path?",
    }

    preds: Path | None = None
    refs: Path | None = None
    ref_take2: Path | None = None
    categories: Path | None = None
    fps: float | None = None
    context: int = 0
    frame_mismatch: str = "error"
    resize: str = "error"
    batch_size: int = 16
    device: str = "auto"
    out: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)

    def physics_iq_kwargs(self) -> dict[str, Any]:
        """The arguments of :func:`foresight_eval.iq_score.score_physics_iq` for this config."""
        from foresight_eval.iq_score import load_categories
        from foresight_eval.options import ScoreOptions

        if self.preds is None or self.refs is None or self.ref_take2 is None:
            raise UsageError("give PREDS, REFS and --ref-take2, on the command line or as preds, refs and ref_take2 "
                             "in --config")
        return dict(
            preds=self.resolve(self.preds), refs=self.resolve(self.refs), ref_take2=self.resolve(self.ref_take2),
            categories=None if self.categories is None else load_categories(self.resolve(self.categories)),
            options=ScoreOptions(context=self.context, frame_mismatch=self.frame_mismatch, resize=self.resize,  # type: ignore[arg-type]
                                 batch_size=self.batch_size),
            fps=self.fps, device=self.device, run_dir=None if self.out is None else self.resolve(self.out),
        )

    def run(self, **kwargs: Any):
        """Compute the Physics IQ Score of this config (``kwargs``: further arguments of ``score``) and write
        ``config.yaml`` into ``out``; (score, model run, variance run) as ``score_physics_iq`` returns them."""
        from foresight_eval.iq_score import score_physics_iq

        result = score_physics_iq(**self.physics_iq_kwargs(), **kwargs)
        if self.out is not None:
            self.write(self.resolve(self.out))
        return result

def read_extra_file(path: Path | None) -> dict[str, Any]:
    """The run-level figures of a JSON file: an object of named figures, or a generate_manifest.json
    (its measured figures)."""
    if path is None:
        return {}
    try:
        figures = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{field_ref('extra_file', path)}: {exc}") from exc
    if not isinstance(figures, dict):
        raise UsageError(f"{field_ref('extra_file', path)}: expected a JSON object of named figures")
    if str(figures.get("schema", "")).startswith("foresight-eval/generate/"):  # a generate_manifest.json
        figures = dict(figures.get("figures") or {})
    return figures


def read_config_file(path: str | Path, kinds: Mapping[str, str] = _KINDS) -> dict[str, Any]:
    """The checked, typed values of a YAML config file (only the keys it sets; ``kinds``: the fields of the
    command's config, `score`'s by default); relative paths in it are taken against its ``cwd`` key, or the
    current folder."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{field_ref('config', path)}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UsageError(f"{field_ref('config', path)}: expected a mapping of option: value, got {type(data).__name__}")
    values = checked_values(data, field_ref("config", path), kinds)
    values["cwd"] = Path.cwd() / values["cwd"] if "cwd" in values else Path.cwd()
    return values


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` over ``base``: ``params`` (per metric) and ``extra`` merge key by key, the rest is replaced."""
    merged = dict(base)
    for name, value in overrides.items():
        if name == "params":
            params = {metric: dict(values) for metric, values in merged.get("params", {}).items()}
            for metric, values in value.items():
                params.setdefault(metric, {}).update(values)
            merged["params"] = params
        elif name == "extra":
            merged["extra"] = {**merged.get("extra", {}), **value}
        else:
            merged[name] = value
    return merged


def checked_values(values: Mapping[str, Any], source: str, kinds: Mapping[str, str] = _KINDS) -> dict[str, Any]:
    """``values`` with each key known (a key of ``kinds``) and each value of its field's type (converted:
    paths to Path, lists to tuples); otherwise a UsageError naming ``source`` and the key."""
    checked = {}
    for key, value in current_option_names(values).items():  # config.yaml files written before a rename
        if key not in kinds:
            raise UsageError(f"{source}: unknown key {key!r}{did_you_mean(str(key), kinds)}")
        checked[key] = _checked(key, value, kinds[key], source)
        if key == "metrics" and checked[key] is not None:  # "psnr,ssim" as on the command line
            checked[key] = tuple(name.strip() for item in checked[key] for name in item.split(",") if name.strip())
    return checked


def _checked(key: str, value: Any, kind: str, source: str) -> Any:
    optional = kind.endswith("?")
    kind = kind.rstrip("?")
    if value is None and optional:
        return None

    def wrong() -> UsageError:
        return UsageError(f"{source}: {key} must be {_DESCRIPTIONS[kind]}{' or null' if optional else ''}, "
                          f"got {value!r}")

    if kind in ("path", "name|path", "str"):
        if not isinstance(value, (str, Path)) or (kind != "str" and not str(value)):
            raise wrong()
        return Path(value) if kind == "path" else str(value)
    if kind in ("paths", "strs"):
        items = [value] if isinstance(value, (str, Path)) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, (str, Path)) for item in items):
            raise wrong()
        return tuple(Path(item) for item in items) if kind == "paths" else tuple(str(item) for item in items)
    if kind == "bool":
        if not isinstance(value, bool):
            raise wrong()
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        return float(value)
    if kind == "figures":
        if not isinstance(value, Mapping) or not all(isinstance(name, str) for name in value):
            raise wrong()
        return dict(value)
    # params
    if not isinstance(value, Mapping) or not all(
            isinstance(metric, str) and isinstance(entries, Mapping) and all(isinstance(k, str) for k in entries)
            for metric, entries in value.items()):
        raise wrong()
    return {metric: dict(entries) for metric, entries in value.items()}

