"""The bundled inference path behind `foresight-eval generate`: Qwen2.5-VL -> query adapter -> LTX-Video."""

from foresight_eval.inference.adapter import AdapterCheckpointError, AdapterConfig, QueryAdapter
from foresight_eval.inference.models import PRESETS, LoadedModels, ModelWeightsNotFound, load_models
from foresight_eval.inference.pipeline import GenerateOptions, GenerateResult, generate

__all__ = [
    "PRESETS", "AdapterCheckpointError", "AdapterConfig", "GenerateOptions", "GenerateResult", "LoadedModels",
    "ModelWeightsNotFound", "QueryAdapter", "generate", "load_models",
]
