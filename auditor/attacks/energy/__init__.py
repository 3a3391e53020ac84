"""Energy-latency searches: inputs that make a sparsity-exploiting machine slow and power-hungry.

Every module of this package is imported here and registers its search in ``SEARCHES`` (names
and other spellings in one place: ``@register_search("name", aliases=(...))``).  Every search has one
uniform call (see :mod:`auditor.attacks.energy.base`)::

    search = make_search("whitebox", eps=0.9, beta=15)     # or WhiteBoxSparsity(eps=0.9, beta=15)
    result = search(model, x_clean, cost_fn=cost, layer_weights=w, labels=None, seed=0)

=================  ============================================================  ===============
name               what                                                          knowledge
=================  ============================================================  ===============
``whitebox``       Algorithm 1 of Krithivasan et al.: momentum descent on         gradients
                   L_sparsity + c L_ce, label kept, L2/Linf ball
``blackbox``       surrogate transfer (Algorithm 1, c = 0) + ZOO label repair     target scores
``sponge_ga``      Sponge-GA: genetic algorithm on the measured cost              cost only
``sponge_lbfgs``   Sponge-L-BFGS: maximise the activations' L2 norm               gradients
``uniform``        Müller & Quiring uniform sampling N(mu, sigma^2)               cost only
``top_natural``    the k costliest inputs of a data set                           cost only
=================  ============================================================  ===============

Analyses (zero thresholds, uniformity, distribution shift, Kendall's tau, replay) live in
:mod:`auditor.attacks.energy.analysis`; defences (activation thresholding, input quantisation, JPEG) in
:mod:`auditor.attacks.energy.defences`.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..base import Param
from .base import SEARCHES, Search, SearchResult

#: the modules of this package that define no search (imported where they are used: they need onnx)
_NOT_SEARCHES = {"analysis", "defences"}
for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _NOT_SEARCHES:
        importlib.import_module(f"{__name__}.{_module.name}")

from .blackbox import BlackBoxSparsity  # noqa: E402  (the public names of the searches shipped)
from .ga import SpongeGA  # noqa: E402
from .lbfgs import SpongeLBFGS  # noqa: E402
from .topnatural import TopNatural  # noqa: E402
from .uniform import UniformSampling  # noqa: E402
from .whitebox import WhiteBoxSparsity  # noqa: E402


def search_class(name: str) -> type[Search]:
    """The search class called ``name`` (or one of its other spellings)."""
    return SEARCHES.get(name)


def make_search(name: str, **params) -> Search:
    """The search called ``name`` configured with ``params`` (AuditorError for unknown names or
    bad parameters, so scenario files can feed it directly)."""
    return search_class(name)(**params)


__all__ = [
    "SEARCHES", "make_search", "search_class", "Search", "SearchResult", "Param",
    "WhiteBoxSparsity", "BlackBoxSparsity", "SpongeGA", "SpongeLBFGS", "UniformSampling", "TopNatural",
]
