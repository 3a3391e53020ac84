"""The robustness axis of the verdict: how easily an attacker changes the model's answer.

:func:`robustness_audit` runs a list of attacks and measures, per attack and ε:

* clean accuracy, robust accuracy (correct on the clean input *and* not successfully attacked)
  and attack success rate (successful attacks among the clean-correct inputs);
* for minimal-norm attacks, statistics of the minimal perturbations (L2, Linf, MSE, PSNR; L0 for
  JSMA) over the clean-correct inputs;
* the confidence margin (top-1 minus runner-up logit) distribution on clean vs attacked inputs;
* queries per input, for every attack (the figure that matters for query-based ones);
* for the ``autoattack`` ensemble, the ``ensemble`` rows: per ε, ``n_run`` (inputs not fooled at a
  smaller ε) and per member ``{attack, n_attacked, n_broken, queries}``, members in run order,
  each attacking only what the earlier ones left robust.

Every adversarial example an attack reports is re-verified before it is counted: an independent
forward pass through ``verify`` (a different Classifier over the same model) must give the
adversarial class, and the perturbation must respect the pixel range and the ε-ball.

Everything returned is JSON-serialisable (plain floats, ints, lists, dicts; non-finite numbers
become ``None``).  The checks that read it are declared in :mod:`auditor.pipeline.checks`.
"""

from __future__ import annotations

import time

import numpy as np

from ..attacks.evasion.base import default_epsilon
from ..attacks.primitives import margins, top_margin
from ..errors import AuditorError
from ..norms import perturbation_stats
from ..runtime.classifier import Classifier
from ..runtime.verify import is_adversarial, ort_classifier, verified_success  # noqa: F401 (re-exported)
from ..validate import parse_attack
from .stats import QUANTILES, summary  # noqa: F401 (QUANTILES re-exported)
from .stats import finite_or_none as _f



# --------------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------------


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return _f(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj


# --------------------------------------------------------------------------------------------
# attack specifications (one entry: auditor.validate.parse_attack)
# --------------------------------------------------------------------------------------------


def choose_targets(kind: str, labels: np.ndarray, clean_logits: np.ndarray, seed: int) -> np.ndarray:
    """Target classes for a targeted run: ``random`` (uniform among the other classes, seeded),
    ``least_likely`` (lowest clean logit) or ``next`` (runner-up at the clean input)."""
    n, c = clean_logits.shape
    if kind == "random":
        rng = np.random.default_rng([int(seed), 7])
        return ((labels + rng.integers(1, c, size=n)) % c).astype(np.int64)
    z = np.asarray(clean_logits, np.float64).copy()
    if kind == "least_likely":
        z[np.arange(n), labels] = np.inf
        return z.argmin(axis=1).astype(np.int64)
    z[np.arange(n), labels] = -np.inf
    return z.argmax(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------------


def robustness_audit(model: Classifier, x, y, attacks, verify: Classifier | None = None, seed: int = 0) -> dict:
    """Run ``attacks`` against ``model`` on inputs ``x`` with true labels ``y``.

    ``attacks``: a list of ``(name, params, norm, epsilons)`` tuples (a fifth element, or the
    ``targeted`` key of a mapping entry, may ask for a targeted run: ``random``, ``least_likely``
    or ``next``).  ``norm`` None means the attack's own; ``epsilons`` None means the RobustBench
    default for the input shape (for minimal-norm L2/Linf attacks too; JSMA reports only its
    minimal L0 statistics then).  ``verify`` re-checks every adversarial example (default: the
    model itself, which is not independent).

    The same steps run chunk by chunk in the audit: :func:`attack_part` per chunk of inputs,
    then :func:`robustness_report` on the merged parts.
    """
    if not isinstance(model, Classifier):
        raise AuditorError(f"the model must be a Classifier, got {type(model).__name__}", where="robustness")
    verify = model if verify is None else verify
    x, y = check_labelled(x, y)
    specs = [parse_attack(s) for s in (attacks or [])]
    clean_logits = _batched_logits(verify, x)
    parts = []
    for k, spec in enumerate(specs):
        targets = None
        if spec["targeted"]:
            targets = choose_targets(spec["targeted"], y, clean_logits, seed + k)
        parts.append(attack_part(model, verify, x, y, spec, targets=targets, seed=seed + k, clean_logits=clean_logits))
    return robustness_report(specs, parts, y, clean_logits)


def check_labelled(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise AuditorError(f"inputs {x.shape} and labels {y.shape} do not match", where="robustness")
    return x, y


def _batched_logits(verify: Classifier, x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(verify.logits(x[i:i + 512])) for i in range(0, len(x), 512)])


def parse_attacks(attacks) -> list[dict]:
    """The checked attack entries (see :func:`robustness_audit`)."""
    return [parse_attack(s) for s in (attacks or [])]


def attack_part(model: Classifier, verify: Classifier, x: np.ndarray, y: np.ndarray, spec: dict, *,
                targets: np.ndarray | None, seed: int, clean_logits: np.ndarray | None = None) -> dict:
    """One attack (a parsed entry) on inputs ``x`` (all of them or a chunk), every adversarial
    example re-verified by ``verify``: the per-input results :func:`robustness_report` reads.
    Targets of a targeted run other than ``random`` are chosen here from the clean logits; random
    targets are drawn over all the inputs by the caller."""
    attack = spec["attack"]
    if clean_logits is None:
        clean_logits = _batched_logits(verify, x)
    if spec["targeted"] and targets is None:
        if spec["targeted"] == "random":
            raise AuditorError("random targets are drawn over all the inputs: pass them", where="robustness")
        targets = choose_targets(spec["targeted"], y, clean_logits, seed)
    shape = tuple(getattr(model, "input_shape", x.shape[1:]) or x.shape[1:])
    bounds = (float(model.bounds[0]), float(model.bounds[1]))
    eps = spec["epsilons"]
    if eps is None and attack.norm in ("l2", "linf"):
        eps = [default_epsilon(attack.norm, shape, bounds)]
    t0 = time.perf_counter()
    res = attack(model, x, y, eps, targets=targets, seed=seed)
    part = {"clean_logits": clean_logits, "seconds": time.perf_counter() - t0, "per_input_queries": res.queries,
            "epsilons": [None if e is None else float(e) for e in res.epsilons], "results": [], "minimal": None}
    for j, e in enumerate(res.epsilons):
        if e is None:
            continue
        ok, adv_logits = verified_success(verify, x, res.x_adv[j], y, targets, attack.norm, e)
        part["results"].append({"counted": res.success[j] & ok, "unverified": res.success[j] & ~ok,
                                "adv_logits": adv_logits, "x_adv": res.x_adv[j],
                                "queries": None if res.queries_per_eps is None else res.queries_per_eps[j]})
    if res.details and res.details.get("members"):
        # AutoAttack: per ε, each member's inputs (those every earlier member left unbroken) and
        # how many of them it broke (counts: chunks add up)
        part["ensemble"] = res.details["members"]
    if attack.minimal and res.x_min is not None:
        ok, min_logits = verified_success(verify, x, res.x_min, y, targets)
        part["minimal"] = {"ok": ok, "finite": np.isfinite(res.distances), "x_min": res.x_min, "logits": min_logits,
                           "stats": perturbation_stats(res.x_min, x, bounds[1] - bounds[0])}
    return part


def robustness_report(specs: list[dict], parts: list[dict], y: np.ndarray, clean_logits: np.ndarray | None = None) -> dict:
    """The robustness report from the (merged) parts of every attack, computed once over all the
    inputs: clean accuracy and margins, per attack and ε robust accuracy, success rate, margins,
    queries; minimal-perturbation statistics.  ``clean_logits``: the verifier's on the inputs
    (default: those the first part measured)."""
    y = np.asarray(y).astype(np.int64)
    clean_logits = parts[0]["clean_logits"] if clean_logits is None else clean_logits
    correct = clean_logits.argmax(axis=1) == y
    report = {
        "n": int(len(y)),
        "clean_accuracy": float(correct.mean()),
        "clean_margin": summary(top_margin(clean_logits)),
        "clean_label_margin": summary(margins(clean_logits, y)),
        "attacks": [_attack_entry(spec, part, y, correct) for spec, part in zip(specs, parts)],
    }
    return _jsonable(report)


def _attack_entry(spec: dict, part: dict, y: np.ndarray, correct: np.ndarray) -> dict:
    attack = spec["attack"]
    n_correct = int(correct.sum())
    queries = part["per_input_queries"]
    entry = {
        "attack": spec["name"],
        "norm": attack.norm,
        "params": _jsonable(attack.params),
        "targeted": spec["targeted"],
        "minimal": bool(attack.minimal),
        "query_based": bool(attack.query_based),
        "seconds": part["seconds"],
        "queries": {"total": int(queries.sum()), "per_input": summary(queries)},
        "results": [],
    }
    for e, r_part in zip([e for e in part["epsilons"] if e is not None], part["results"]):
        counted = r_part["counted"]
        robust = correct & ~counted
        adv_logits = r_part["adv_logits"]
        r = {
            "epsilon": float(e),
            "robust_accuracy": float(robust.mean()),
            "attack_success_rate": float(counted[correct].mean()) if n_correct else 0.0,
            "n_success": int(counted[correct].sum()),
            "n_attacked": n_correct,
            "n_unverified": int(r_part["unverified"].sum()),
            "margin": summary(top_margin(adv_logits)),
            "label_margin": summary(margins(adv_logits, y)),
        }
        if r_part["queries"] is not None:
            q = r_part["queries"]
            r["queries"] = {"per_input": summary(q[correct]),
                            "to_success": summary(q[correct & counted])}
        entry["results"].append(r)
    if part.get("ensemble"):
        # AutoAttack: per ε, each member's inputs (those every earlier member left unbroken)
        # and how many of them it broke (its own forward pass; the results above re-verify)
        entry["ensemble"] = part["ensemble"]
    m = part["minimal"]
    if m is not None:
        ok, stats = m["ok"], m["stats"]
        good = ok & correct & m["finite"]
        minimal = {"n_attacked": n_correct, "n_success": int(good.sum()),
                   "n_unverified": int((m["finite"] & ~ok & correct).sum())}
        for key in ("l0", "l2", "linf", "mse", "psnr"):
            minimal[key] = summary(stats[key][good])
        # the median over all attacked inputs, failures counting as infinitely far
        d = np.where(good, stats[attack.norm if attack.norm != "l0" else "l0"], np.inf)[correct]
        minimal["median_distance"] = _f(np.median(d)) if len(d) else None
        minimal["median_l2"] = _f(np.median(np.where(good, stats["l2"], np.inf)[correct])) if len(d) else None
        entry["minimal_perturbation"] = minimal
    return entry


def transfer(x_adv, labels, target_model: Classifier, *, targets=None, mask=None, batch_size: int = 512) -> float:
    """Fraction of ``x_adv`` that fool ``target_model`` (label changed, or target reached).

    ``mask`` restricts the count (e.g. to the examples that succeeded on the source model and
    whose clean input the target model classifies correctly); NaN when it selects nothing.
    """
    x_adv = np.asarray(x_adv, np.float32)
    labels = np.asarray(labels).astype(np.int64)
    if len(x_adv) != len(labels):
        raise AuditorError(f"{len(x_adv)} examples but {len(labels)} labels", where="transfer")
    logits = np.concatenate([np.asarray(target_model.logits(x_adv[i:i + batch_size]))
                             for i in range(0, len(x_adv), batch_size)]) if len(x_adv) else np.zeros((0, 1))
    fooled = is_adversarial(logits, labels, None if targets is None else np.asarray(targets).astype(np.int64))
    if mask is not None:
        fooled = fooled[np.asarray(mask, bool)]
    return float(fooled.mean()) if len(fooled) else float("nan")


def transfer_audit(model_a: Classifier, model_b: Classifier, x, y, attack=("pgd", {"steps": 40}, "linf", None), *,
                   verify_a: Classifier | None = None, verify_b: Classifier | None = None, seed: int = 0) -> dict:
    """Transferability both ways: examples crafted on ``model_a`` replayed on ``model_b`` and the
    reverse (e.g. the original model and its reshaped deployment).

    ``attack`` is one ``(name, params, norm, epsilons)`` entry; with several ε the results are per
    ε.  A rate counts, among the inputs both models classify correctly (per the ``verify_*``
    classifiers, default the models) whose attack succeeded on the source, those that also fool
    the other model; NaN-free: ``None`` when no input qualifies.
    """
    spec = parse_attack(attack)
    att = spec["attack"]
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    va, vb = verify_a or model_a, verify_b or model_b
    eps = spec["epsilons"]
    if eps is None and att.norm in ("l2", "linf"):
        eps = [default_epsilon(att.norm, tuple(model_a.input_shape), tuple(model_a.bounds))]
    both = (va.predict(x) == y) & (vb.predict(x) == y)
    ra = att(model_a, x, y, eps, seed=seed)
    rb = att(model_b, x, y, eps, seed=seed)
    rows = []
    for k, e in enumerate(ra.epsilons):
        ab = transfer(ra.x_adv[k], y, vb, mask=ra.success[k] & both)
        ba = transfer(rb.x_adv[k], y, va, mask=rb.success[k] & both)
        rows.append({"epsilon": None if e is None else float(e), "a_to_b": _f(ab), "b_to_a": _f(ba),
                     "n_source_success_a": int((ra.success[k] & both).sum()),
                     "n_source_success_b": int((rb.success[k] & both).sum())})
    return {"attack": spec["name"], "norm": att.norm, "n_common_correct": int(both.sum()), "results": rows}
