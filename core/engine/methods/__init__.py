"""Pruning methods as plug-ins: one small scorer class each, behind ``Scorer``, named in one registry.

``core.pruning_spec.METHODS`` declares each method's traits (what it reads, whether it scores at every
step, how it treats bias compensation) torch-free, for validation and the docs; this registry maps every
method, and every score of the gradient methods, to the class that computes it. A test keeps the two equal.
"""

from __future__ import annotations

from core.engine.methods.activations import FlapHeadsumScorer, FlapScorer, WandaSpDenseScorer, WandaSpScorer
from core.engine.methods.base import LayerScores, Scored, Scorer, StepInput
from core.engine.methods.baselines import MagnitudeScorer, RandomScorer
from core.engine.methods.fisher import GateFisherScorer, RefitFisherScorer
from core.engine.methods.paper import PaperTaylorScorer
from core.engine.methods.taylor import TaylorScorer
from core.pruning_spec import METHODS, Method, PruneSettings, Score

GRADIENT_SCORERS: dict[Score, type[Scorer]] = {
    Score.taylor: TaylorScorer,
    Score.fisher: GateFisherScorer,
    Score.refit_fisher: RefitFisherScorer,
}
SCORERS: dict[Method, type[Scorer]] = {
    Method.gisp_paper: PaperTaylorScorer,
    Method.wanda_sp: WandaSpScorer,
    Method.wanda_sp_dense: WandaSpDenseScorer,
    Method.flap: FlapScorer,
    Method.flap_headsum: FlapHeadsumScorer,
    Method.magnitude: MagnitudeScorer,
    Method.random: RandomScorer,
}


def scorer_for(settings: PruneSettings) -> Scorer:
    """The scorer of the run's method (for gradient methods, of its ``score``)."""
    if METHODS[settings.method].takes_score:
        assert settings.score is not None  # resolved by validation
        return GRADIENT_SCORERS[settings.score]()
    return SCORERS[settings.method]()


__all__ = ["GRADIENT_SCORERS", "SCORERS", "LayerScores", "Scored", "Scorer", "StepInput", "scorer_for"]
