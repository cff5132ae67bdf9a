"""FID and KID over frames, with torchmetrics' definitions and feature extractor.

Both use the extractor of ``torchmetrics.image.FrechetInceptionDistance`` and ``KernelInceptionDistance``,
``NoTrainInceptionV3``: torch-fidelity's TF 2015-12-05 Inception-v3 (the network of the original FID,
Heusel et al. 2017), 2048-d pool features. Every scored frame is one sample; frames go in as torchmetrics'
``normalize=True`` makes them (``(x * 255).byte()``) and the extractor resizes them to 299x299 itself:
antialiased bilinear as torchmetrics does by default (``resize=bilinear_antialias``), or TF1 bilinear as
torch-fidelity and the original TF FID do (``resize=tf_bilinear``, torchmetrics' ``antialias=False``). The weight file is torch-fidelity's own ``weights-inception-2015-12-05-6726825d.pth`` in
torch's hub cache (or ``--weights-dir``), read with ``torch.load(weights_only=True)``: torch-fidelity
would unpickle it unrestricted, so the state dict is handed to the extractor instead of the path.

* ``fid``: Fréchet distance of the Gaussians of the prediction and reference frame features (float64).
* ``kid``: unbiased MMD^2, cubic polynomial kernel, mean over ``subsets`` subsets of ``subset_size``
  frames (Bińkowski et al. 2018); the std over subsets is in the summary as ``kid_std``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

import numpy as np
import torch

from foresight_eval.errors import MetricUnavailable
from foresight_eval.metrics.base import MetricInfo, RunContext
from foresight_eval.metrics.distributions import kid
from foresight_eval.metrics.registry import register
from foresight_eval.metrics.set_features import WindowFeatureMetric
from foresight_eval.weights import TorchHubFile, register_weights

INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"


INCEPTION_WEIGHTS = register_weights(TorchHubFile("inception-fid", "fid, kid (torch-fidelity InceptionV3)", INCEPTION_URL))


def inception_extractor(path: Path, device: torch.device, antialias: bool = True) -> torch.nn.Module:
    """torchmetrics' InceptionV3 (``NoTrainInceptionV3``: torch-fidelity's network, 2048-d pool features,
    resized to 299x299 with PyTorch's antialiased bilinear, or TF1 bilinear with ``antialias=False``)
    with the weights of ``path``."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
    except ImportError as exc:
        raise MetricUnavailable("needs torchmetrics with the torch-fidelity package (FID/KID extractor)") from exc
    state = torch.load(path, map_location="cpu", weights_only=True)
    # Its constructor fetches the weights by URL when given no path (and unpickles freely when given
    # one): hand it the state dict loaded safely above in place of the download.
    with mock.patch("torch_fidelity.feature_extractor_inceptionv3.load_state_dict_from_url", return_value=state):
        try:
            network = NoTrainInceptionV3("inception-v3-compat", ["2048"], antialias=antialias)
        except ModuleNotFoundError as exc:
            raise MetricUnavailable(str(exc)) from exc
    return network.to(device).eval()


class _InceptionFrames(WindowFeatureMetric):
    resolution = None  # the extractor resizes to 299x299 itself (fid.resize)
    value_range = "uint8, (x * 255).byte() as torchmetrics normalize=True"
    extractor = "torchmetrics NoTrainInceptionV3 (torch-fidelity inception-v3-compat, TF 2015-12-05) pool3, 2048-d"
    defaults: ClassVar[dict[str, Any]] = {"frames": 1, "stride": 1, "window": "all", "resize": "bilinear_antialias",
                                          "resamples": 20, "seed": 0, "batch": 32}
    choices: ClassVar[dict[str, tuple[Any, ...]]] = {"window": ("first", "all"), "frames": (1,),
                                                     "resize": ("bilinear_antialias", "tf_bilinear")}

    def load_extractor(self, context: RunContext) -> None:
        self.weights_file = INCEPTION_WEIGHTS.locate(context.weights_dir)
        self.network = inception_extractor(self.weights_file, self.device,
                                           antialias=self.params["resize"] == "bilinear_antialias")

    def extract(self, windows: torch.Tensor) -> torch.Tensor:
        return self.network((windows.flatten(0, 1).to(self.device) * 255).byte())


@register
class FID(_InceptionFrames):
    info = MetricInfo(
        name="fid",
        description="Fréchet inception distance over every scored frame of the prediction set vs the reference "
        "set (torchmetrics' definition and torch-fidelity InceptionV3 features), float64, bootstrap CI over clips",
        direction="lower",
        granularity="set",
        needs=("weights",),
        default=False,
    )


@register
class KID(_InceptionFrames):
    info = MetricInfo(
        name="kid",
        description="Kernel inception distance (unbiased MMD^2, cubic polynomial kernel, mean over random "
        "subsets; torchmetrics' definition and features) over every scored frame, bootstrap CI over clips",
        direction="lower",
        granularity="set",
        needs=("weights",),
        default=False,
    )
    defaults = {**_InceptionFrames.defaults, "subsets": 100, "subset_size": 1000}

    def statistic(self, pred: np.ndarray, ref: np.ndarray) -> float:
        return kid(pred, ref, subsets=self.params["subsets"], subset_size=self.params["subset_size"],
                   seed=self.params["seed"])[0]

    def compute_set(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        figures = super().compute_set(parts)
        if parts:
            pred, ref = (np.concatenate([np.asarray(p[side], np.float64) for p in parts]) for side in ("pred", "ref"))
            if min(len(pred), len(ref)) >= 2:
                figures["subset_size_used"] = min(self.params["subset_size"], len(pred), len(ref))
                figures["kid_std"] = kid(pred, ref, subsets=self.params["subsets"],
                                         subset_size=self.params["subset_size"], seed=self.params["seed"])[1]
        return figures
