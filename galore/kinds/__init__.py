"""Table I as code: every explanation kind is one unit (``KindUnit``) in ``UNITS``, keyed by ``Kind``. A unit holds
its row of Table I (m^alpha, m^beta, m^gamma: ``recipe``), the classes it needs, the maps it asks the regions stage
to measure (eq. 2 applied), and how it assembles its regions into its result. ``plan`` applies the units of an
image's kinds; ``measure_batch`` measures every map of a batch at once and hands each unit its regions.

Example:
    >>> [kind.value for kind in UNITS]
    ['attributive', 'self_aware', 'deliberative', 'counterfactual']
    >>> TABLE_I[Kind.DELIBERATIVE]
    Recipe(alpha=False, beta=<Beta.IDENTITY: 'a'>, gamma=<Gamma.INVERSE_SCORE: 'a(1 - s)'>)
"""
from __future__ import annotations

from ..combiner import Recipe
from ..exemplars import Features
from ..options import ExplainOptions, Kind
from ..rows import RowMaps
from .attributive import ATTRIBUTIVE, SELF_AWARE
from .counterfactual import COUNTERFACTUAL
from .deliberative import DELIBERATIVE, MAX_AMBIGUITIES
from .measure import SHARED_EVIDENCE_RATIO, Plan, measure_batch
from .unit import KindMaps, KindUnit, Prediction, Ranked

# One unit per kind, in the order the regions stage lays out an image's maps.
UNITS: dict[Kind, KindUnit] = {unit.kind: unit for unit in (ATTRIBUTIVE, SELF_AWARE, DELIBERATIVE, COUNTERFACTUAL)}
TABLE_I: dict[Kind, Recipe] = {kind: unit.recipe for kind, unit in UNITS.items()}  # the paper's Table I


def units_of(opts: ExplainOptions) -> list[KindUnit]:
    """The units of the kinds ``opts`` asks for, in ``UNITS`` order."""
    return [unit for kind, unit in UNITS.items() if kind in opts.kinds]


def plan(opts: ExplainOptions, pred: Prediction, query: RowMaps, exemplars: dict[int, tuple[Features, RowMaps]]
         ) -> Plan:
    """Table I applied to one image (eqs. 3, 4, 5, 12, 13, 14): each of its kinds' maps."""
    return Plan([(unit, unit.maps(opts, pred, query, exemplars)) for unit in units_of(opts)])


__all__ = ["UNITS", "TABLE_I", "KindUnit", "KindMaps", "Ranked", "Prediction", "Plan", "plan", "measure_batch",
           "units_of", "MAX_AMBIGUITIES", "SHARED_EVIDENCE_RATIO"]
