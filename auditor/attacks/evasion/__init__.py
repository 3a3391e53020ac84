"""Evasion attacks with one uniform call (see :mod:`auditor.attacks.evasion.base`).

``ATTACKS`` maps the names used in scenario files to the classes; :func:`make_attack` builds one
from a name and its parameters, reporting unknown names or parameters as :class:`AuditorError`.
"""

from __future__ import annotations

import inspect

from ...errors import AuditorError
from .apgd import APGD, APGDT
from .autoattack import AutoAttack
from .base import Attack, AttackResult, default_epsilon, is_adversarial, margins, top_margin
from .boundary import BoundaryAttack
from .cw import CarliniWagnerL2
from .deepfool import DeepFool
from .fgsm import FGSM
from .hsj import HopSkipJump
from .fab import FAB
from .jsma import JSMA
from .lsa import LocalSearchAttack
from .pgd import PGD
from .square import SquareAttack
from .zoo import ZOO

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM,
    "pgd": PGD,
    "cw": CarliniWagnerL2,
    "deepfool": DeepFool,
    "jsma": JSMA,
    "zoo": ZOO,
    "square": SquareAttack,
    "hsj": HopSkipJump,
    "apgd": APGD,
    "apgd_t": APGDT,
    "fab": FAB,
    "autoattack": AutoAttack,
    "boundary": BoundaryAttack,
    "lsa": LocalSearchAttack,
}


def attack_parameters(name: str) -> dict:
    """The parameters an attack accepts, with their defaults."""
    cls = _lookup(name)
    sig = inspect.signature(cls.__init__)
    return {k: p.default for k, p in sig.parameters.items() if k != "self"}


def _lookup(name: str) -> type[Attack]:
    if not isinstance(name, str) or name.lower() not in ATTACKS:
        raise AuditorError(f"unknown attack {name!r}; known attacks: {', '.join(ATTACKS)}", where="attack")
    return ATTACKS[name.lower()]


def make_attack(name: str, **params) -> Attack:
    """Build the attack ``name`` with ``params`` (as given in a scenario file)."""
    cls = _lookup(name)
    allowed = attack_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise AuditorError(f"unknown parameter(s) {', '.join(unknown)} for attack {name!r}; "
                           f"accepted: {', '.join(allowed)}", where="attack")
    try:
        return cls(**params)
    except AuditorError:
        raise
    except (TypeError, ValueError) as e:
        raise AuditorError(f"bad parameters for attack {name!r}: {e}", where="attack") from None


__all__ = ["APGD", "APGDT", "ATTACKS", "Attack", "AttackResult", "AutoAttack", "BoundaryAttack", "CarliniWagnerL2",
           "DeepFool", "FAB", "FGSM", "HopSkipJump", "JSMA", "LocalSearchAttack", "PGD", "SquareAttack", "ZOO",
           "attack_parameters", "default_epsilon", "is_adversarial", "make_attack", "margins", "top_margin"]
