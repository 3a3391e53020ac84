"""Hardware cost models: how long an input takes and how much energy it costs on a machine.

``COST_MODELS`` maps the ``cost_model:`` name of a hardware profile to its class; every class has
a ``Params`` dataclass (the profile's ``params:``) and ``simulate(layers, acts) -> CostResult``
(see :mod:`auditor.hw.base`).

* ``cnvlutin`` - zero-skipping DaDianNao-style accelerator (Albericio et al., ISCA 2016)
* ``sparce``   - in-order ARMv8-A core with SparCE skip extensions (Sen et al., IEEE TC 2019)
* ``dense``    - DaDianNao-like accelerator without skipping (the Cnvlutin baseline)
"""

from __future__ import annotations

import typing

from .base import CostModel, CostResult, ConvGeom, lower, param_doc
from .cnvlutin import CnvlutinModel, CnvlutinParams
from .dense import DenseModel, DenseParams
from .fpu import FpuModel
from .sparce import SparceModel, SparceParams
from ..errors import AuditorError

COST_MODELS: dict[str, type[CostModel]] = {
    "cnvlutin": CnvlutinModel,
    "sparce": SparceModel,
    "dense": DenseModel,
    "axfpm": FpuModel,
}


def build_cost_model(kind: str, params: dict | None = None) -> CostModel:
    """Instantiate the cost model ``kind`` from an (already validated) ``params`` mapping or Params object."""
    cls = COST_MODELS.get(kind)
    if cls is None:
        raise AuditorError(f"unknown cost model '{kind}' (known: {', '.join(sorted(COST_MODELS))})")
    if params is None or isinstance(params, cls.Params):
        return cls(params)
    try:
        p = cls.Params(**_coerce(cls.Params, dict(params)))
    except (TypeError, ValueError) as e:
        raise AuditorError(f"params: {e}", where=kind) from None
    return cls(p)


def _coerce(params_cls, values: dict) -> dict:
    """Ints (and numeric strings such as PyYAML's '1.0e9') given for float fields become floats."""
    hints = typing.get_type_hints(params_cls)
    out = dict(values)
    for k, v in values.items():
        if hints.get(k) is float and not isinstance(v, bool) and isinstance(v, (int, str)):
            out[k] = float(v)
    return out


__all__ = [
    "COST_MODELS", "build_cost_model", "CostModel", "CostResult", "ConvGeom", "lower", "param_doc",
    "CnvlutinModel", "CnvlutinParams", "DenseModel", "DenseParams", "SparceModel", "SparceParams",
]
