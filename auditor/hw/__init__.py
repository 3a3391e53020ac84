"""Hardware cost models: how long an input takes and how much energy it costs on a machine.

``COST_MODELS`` (a :class:`~auditor.registry.Registry`) maps the ``cost_model:`` name of a hardware
profile to its class; each class registers itself once with ``@cost_model(name)`` and has a
``Params`` dataclass (the profile's ``params:``, whose default energies come from
:mod:`auditor.hw.energies`) and ``simulate(layers, acts) -> CostResult`` (see :mod:`auditor.hw.base`).

* ``cnvlutin`` - zero-skipping DaDianNao-style accelerator (Albericio et al., ISCA 2016)
* ``sparce``   - in-order ARMv8-A core with SparCE skip extensions (Sen et al., IEEE TC 2019)
* ``dense``    - DaDianNao-like accelerator without skipping (the Cnvlutin baseline); both DaDianNao
  machines are :mod:`auditor.hw.dadiannao`
* ``axfpm``    - an in-order FPU core (:mod:`auditor.hw.fpu`) whose multiplier is any variant of
  :mod:`auditor.axfpm.variants`: the Ax-FPM ones, exact (``hwprofiles/fpu_exact.yaml``) or bfloat16
"""

from __future__ import annotations

import importlib
import pkgutil

# the shipped models register in this order (the order of docs/reference.md and `auditor list`)
from .base import COST_MODELS, CostModel, CostResult, ConvGeom, cost_model, lower, param_doc
from .cnvlutin import CnvlutinModel, CnvlutinParams
from .sparce import SparceModel, SparceParams
from .dense import DenseModel, DenseParams
from .fpu import FpuModel, FpuParams

# every other module of the package too: a new cost model is one module with @cost_model(name)
for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def build_cost_model(kind: str, params=None) -> CostModel:
    """Instantiate the cost model ``kind`` from an (already validated) ``params`` mapping or Params
    object; an unknown ``kind`` is an AuditorError naming the known ones."""
    return COST_MODELS.get(kind).from_params(params)


__all__ = [
    "COST_MODELS", "build_cost_model", "cost_model", "CostModel", "CostResult", "ConvGeom", "lower", "param_doc",
    "CnvlutinModel", "CnvlutinParams", "DenseModel", "DenseParams", "SparceModel", "SparceParams", "FpuModel",
    "FpuParams",
]
