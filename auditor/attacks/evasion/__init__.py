"""Evasion attacks with one uniform call (see :mod:`auditor.attacks.evasion.base`).

Every module of this package is imported here; an attack registers itself in ``ATTACKS`` (an
:class:`auditor.registry.Registry`) with ``@ATTACKS.register("name")``, so a new attack is one new
module.  :func:`make_attack` builds one from a name and its parameters, reporting unknown names or
parameters as :class:`AuditorError`.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..primitives import margins, top_margin
from .base import ATTACKS, Attack, AttackResult, default_epsilon, is_adversarial

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

from .apgd import APGD, APGDT  # noqa: E402  (the public names of the attacks shipped)
from .autoattack import AutoAttack  # noqa: E402
from .boundary import BoundaryAttack  # noqa: E402
from .cw import CarliniWagnerL2  # noqa: E402
from .deepfool import DeepFool  # noqa: E402
from .fab import FAB  # noqa: E402
from .fgsm import FGSM  # noqa: E402
from .hsj import HopSkipJump  # noqa: E402
from .jsma import JSMA  # noqa: E402
from .lsa import LocalSearchAttack  # noqa: E402
from .pgd import PGD  # noqa: E402
from .square import SquareAttack  # noqa: E402
from .zoo import ZOO  # noqa: E402


def attack_parameters(name: str) -> dict:
    """The parameters an attack accepts, with their defaults."""
    return {k: p.default for k, p in ATTACKS.get(name).PARAMS.items()}


def make_attack(name: str, **params) -> Attack:
    """Build the attack ``name`` with ``params`` (as given in a scenario file; AuditorError for an
    unknown name or a bad parameter)."""
    return ATTACKS.get(name)(**params)


__all__ = ["APGD", "APGDT", "ATTACKS", "Attack", "AttackResult", "AutoAttack", "BoundaryAttack", "CarliniWagnerL2",
           "DeepFool", "FAB", "FGSM", "HopSkipJump", "JSMA", "LocalSearchAttack", "PGD", "SquareAttack", "ZOO",
           "attack_parameters", "default_epsilon", "is_adversarial", "make_attack", "margins", "top_margin"]
