"""Faithfulness metrics for GALORE explanations, on any engine and any attribution settings (pure torch + numpy;
pytorch-grad-cam and scikit-image are imported only by the references and SSIM that need them).

- ``deletion``: deletion / insertion AUC of attributive maps (RISE, Petsiuk et al. 2018), with a random map and
  pytorch-grad-cam's GradCAM as references;
- ``type_deletion``: a deletion test per explanation type against random and attributive regions of the same size
  (and FinerCAM for counterfactuals), with the Spearman correlation between strength and effect;
- ``sanity``: cascading model-parameter randomisation (Adebayo et al. 2018), Spearman and SSIM;
- ``pointing``: the grid pointing game on 2 x 2 mosaics of real photos (Böhle et al. 2021).

Example:
    >>> from galore import Engine
    >>> from galore.evaluate import DEFAULT_SETTING, Scorer, evaluate_deletion, sample_photos
    >>> engine = Engine.default(device="cpu")
    >>> report = evaluate_deletion(Scorer.of(engine), sample_photos(["chelsea"]), [DEFAULT_SETTING], steps=2)
    >>> [row["method"] for row in report.summary()]  # doctest: +NORMALIZE_WHITESPACE
    ['gradient_x_activation/logit/clip/softmax', 'random map', 'pytorch-grad-cam GradCAM']
"""
from .common import (DEFAULT_SETTING, SAMPLE_PHOTOS, Baseline, Photo, Scorer, Setting, folder_photos,
                     sample_photos, spearman)
from .deletion import DeletionReport, evaluate_deletion
from .pointing import PointingReport, evaluate_pointing
from .sanity import SanityReport, evaluate_sanity
from .type_deletion import TypesReport, evaluate_types

__all__ = ["DEFAULT_SETTING", "SAMPLE_PHOTOS", "Baseline", "Photo", "Scorer", "Setting", "folder_photos",
           "sample_photos", "spearman", "DeletionReport", "evaluate_deletion", "PointingReport",
           "evaluate_pointing", "SanityReport", "evaluate_sanity", "TypesReport", "evaluate_types"]
