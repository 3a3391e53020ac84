"""Top-natural sponge examples (Müller & Quiring, Section III-B, "Top Natural Images Strategy").

Natural images with flat, uniform surfaces are dense.  Measure the cost of every image of a data
set (``x_clean``) and keep the ``k`` costliest — inconspicuous, unmodified inputs.  ``k = None``
returns the whole set ranked by cost.  The cost of the search is one cost measurement per image of
the data set; per returned example that is len(data)/k measurements.
"""

from __future__ import annotations

import numpy as np

from ...errors import AuditorError
from ..base import Param, plumbing
from .base import register_search, Search, SearchResult, chunks


@register_search("top_natural", aliases=('top-natural', 'topnatural', 'top_k'))
class TopNatural(Search):
    """Rank a data set by measured cost and keep the costliest inputs."""

    needs_clean = False
    per_input = False
    PARAMS = {
        "k": Param("float?", 100, "inputs kept (None = all, ranked)", low=1),
        "batch_size": Param("int", 256, "inputs measured together", low=1),
        **plumbing(),
    }

    def _configure(self):
        where = self.where
        k = self.params["k"]
        if k is not None and k != int(k):
            raise AuditorError(f"parameter 'k' must be an integer, got {k}", where)

    def _run(self, model, x_clean, cost_fn, layer_weights, labels, seed) -> SearchResult:
        p = self.params
        n = len(x_clean)
        k = n if p["k"] is None else min(int(p["k"]), n)
        cost = np.empty(n)
        steps = len(range(0, n, p["batch_size"]))
        with self._bar("top-natural ranking", steps) as bar:
            for sl in chunks(n, p["batch_size"]):
                cost[sl] = cost_fn(x_clean[sl])
                bar.update()
        order = np.argsort(-cost, kind="stable")[:k]
        info = {"indices": order, "data_cost": cost}
        if labels is not None:
            info["labels"] = labels[order]
        return SearchResult(self.name, x_clean[order], cost[order], 0, 1, 0.0, None, info)
