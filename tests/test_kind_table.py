"""Every explanation kind is one unit: its Table I row and computation (galore.kinds.UNITS), its shape, and a result
field named by its value in the engine, the galore.v1 proto and the client; conversion goes by shape both ways."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galore.combiner import Beta, Gamma, Recipe
from galore.kinds import TABLE_I, UNITS
from galore.options import SHAPES, ExplainOptions, Kind
from galore.results import Attributive, ClassScore, Counterfactual, ExemplarSide, ImageResult, Insecurity
from galore_api.v1 import explainer_pb2 as pb
from galore_client.results import Explanation
from galore_client.typed import explanation_from_proto
from galore_service.convert import image_explanation
from tests.regions import region_of


def test_table_i_is_the_papers():
    """Table I of the paper: m^alpha, m^beta, m^gamma per type (eqs. 3, 4, 5/12, 11/14)."""
    assert TABLE_I == {
        Kind.ATTRIBUTIVE: Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.ONE),
        Kind.SELF_AWARE: Recipe(alpha=True, beta=Beta.ONE, gamma=Gamma.SCORE),
        Kind.DELIBERATIVE: Recipe(alpha=False, beta=Beta.IDENTITY, gamma=Gamma.INVERSE_SCORE),
        Kind.COUNTERFACTUAL: Recipe(alpha=True, beta=Beta.COMPLEMENT, gamma=Gamma.SCORE),
    }


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.value)
def test_every_kind_has_a_unit_a_shape_and_a_field_everywhere(kind):
    assert UNITS[kind].kind is kind and kind in SHAPES
    assert kind.value in {f.name for f in dataclasses.fields(ImageResult)}
    assert kind.value in pb.ImageExplanation.DESCRIPTOR.fields_by_name
    assert kind.value in {f.name for f in dataclasses.fields(Explanation)}


def _mask(x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((4, 6), dtype=bool)
    mask[1:3, x0:x1] = True
    return mask


def test_every_kind_survives_the_wire_both_ways():
    """Engine result -> ImageExplanation (service) -> Explanation (client): each kind's classes, masks and strengths
    arrive, insecurities strongest first."""
    labels = ("zero", "one", "two")
    weak, strong = region_of(_mask(0, 1)), region_of(_mask(2, 5))
    strong = dataclasses.replace(strong, strength=3.0)
    result = ImageResult(width=6, height=4, top_classes=[ClassScore(0, "zero", 0.7)], score_name="softmax", score=0.7,
                         attributive=Attributive(0, region_of(_mask(0, 2)), 0.7),
                         self_aware=Attributive(2, region_of(_mask(1, 3)), 0.1),
                         deliberative={2: [Insecurity((0, 1), weak), Insecurity((0, 2), strong)]},
                         counterfactual=Counterfactual(0, (1, 2), region_of(_mask(3, 6)),
                                                       (ExemplarSide(1, "bank/one/0.png", region_of(_mask(0, 6))),
                                                        ExemplarSide(2, None, None, "no exemplar")), 2.0, False))
    message = image_explanation("img", result, labels, ExplainOptions())
    back = explanation_from_proto(pb.ImageExplanation.FromString(message.SerializeToString()), labels)
    assert (back.attributive.cls.class_id, back.self_aware.cls.label) == (0, "two")
    assert back.attributive.region.mask.sum() == 4 and np.array_equal(back.self_aware.region.mask, _mask(1, 3))
    assert [ins.classes[1].label for ins in back.deliberative[2]] == ["two", "one"]  # strongest first
    assert [ins.strength for ins in back.deliberative[2]] == [3.0, 1.0]
    cf = back.counterfactual
    assert (cf.predicted.label, [c.class_id for c in cf.counter], cf.strength, cf.complete) == ("zero", [1, 2], 2.0,
                                                                                                 False)
    assert np.array_equal(cf.query.mask, _mask(3, 6)) and cf.exemplars[0].exemplar_key == "bank/one/0.png"
    assert cf.exemplars[1].region is None and cf.exemplars[1].missing_reason == "no exemplar"


def test_a_result_without_explanations_sets_no_kind_field():
    message = image_explanation("img", ImageResult(width=2, height=2), ("zero",), ExplainOptions())
    assert not any(message.HasField(k.value) for k in Kind if k is not Kind.DELIBERATIVE)
    assert len(message.deliberative) == 0
