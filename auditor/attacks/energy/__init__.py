"""Energy-latency searches: inputs that make a sparsity-exploiting machine slow and power-hungry.

Every search has one uniform call (see :mod:`auditor.attacks.energy.base`)::

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

from ...errors import AuditorError
from .base import Param, Search, SearchResult
from .blackbox import BlackBoxSparsity
from .ga import SpongeGA
from .lbfgs import SpongeLBFGS
from .topnatural import TopNatural
from .uniform import UniformSampling
from .whitebox import WhiteBoxSparsity

SEARCHES: dict[str, type[Search]] = {
    cls.name: cls
    for cls in (WhiteBoxSparsity, BlackBoxSparsity, SpongeGA, SpongeLBFGS, UniformSampling, TopNatural)
}

#: other spellings accepted by :func:`make_search`
ALIASES = {
    "white_box": "whitebox", "white-box": "whitebox", "sparsity": "whitebox",
    "black_box": "blackbox", "black-box": "blackbox",
    "ga": "sponge_ga", "sponge-ga": "sponge_ga", "spongega": "sponge_ga",
    "lbfgs": "sponge_lbfgs", "l-bfgs": "sponge_lbfgs", "sponge-l-bfgs": "sponge_lbfgs", "sponge_l_bfgs": "sponge_lbfgs",
    "uniform_sampling": "uniform", "uniform-sampling": "uniform",
    "top-natural": "top_natural", "topnatural": "top_natural", "top_k": "top_natural",
}


def search_class(name: str) -> type[Search]:
    """The search class called ``name`` (or one of its other spellings)."""
    if not isinstance(name, str):
        raise AuditorError(f"search name must be a string, got {name!r}")
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    by_class = {cls.__name__.lower(): n for n, cls in SEARCHES.items()}
    key = by_class.get(key, key)
    if key not in SEARCHES:
        raise AuditorError(f"unknown search '{name}'; known: {', '.join(SEARCHES)}")
    return SEARCHES[key]


def make_search(name: str, **params) -> Search:
    """The search called ``name`` configured with ``params`` (AuditorError for unknown names or
    bad parameters, so scenario files can feed it directly)."""
    return search_class(name)(**params)


def describe(name: str) -> dict[str, str]:
    """Parameter name -> "default — doc" of a search (for ``--help``-style listings)."""
    cls = SEARCHES[ALIASES.get(name, name)]
    return {k: f"{p.default!r} — {p.doc}" for k, p in cls.PARAMS.items()}


__all__ = [
    "SEARCHES", "make_search", "search_class", "describe", "Search", "SearchResult", "Param",
    "WhiteBoxSparsity", "BlackBoxSparsity", "SpongeGA", "SpongeLBFGS", "UniformSampling", "TopNatural",
]
