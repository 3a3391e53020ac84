"""The audit of an approximate-multiplier deployment against its exact model.

The approximate model itself (Ax-FPM forward, BPDA gradients) is
:class:`auditor.runtime.approx.ApproxClassifier`.

:func:`approx_audit`
    Clean accuracy and confidence margins exact vs approximate (paper Fig. 12), transfer of
    attacks crafted on the exact model (paper Table 2), a black-box substitute's transfer (Table
    4), the white-box BPDA attack and the query attacks run on the approximate model itself, the
    minimal perturbation each model needs (L2 / MSE / PSNR, Figs. 8-11), and the strongest attack
    on the approximate model - the number a verdict must use.
"""

from __future__ import annotations

import json
import time

import numpy as np

from ..attacks.evasion.base import AttackResult, default_epsilon
from ..attacks.primitives import margins, top_margin
from ..errors import AuditorError
from ..norms import perturbation_stats
from ..runtime.approx import ApproxClassifier
from ..runtime.classifier import Classifier
from ..runtime.session import OnnxClassifier
from ..runtime.verify import ort_classifier, verified_success, within_eps
from ..validate import parse_attack
from .robustness import _jsonable, choose_targets
from .stats import perturbation_summary, summary

# ==============================================================================================
# the audit
# ==============================================================================================

#: attacks crafted on the exact model and transferred (paper Table 2); minimal-norm attacks
#: without epsilons transfer their minimal examples
DEFAULT_TRANSFER = [
    {"name": "fgsm", "epsilons": [0.1, 0.2, 0.3]},
    {"name": "pgd", "params": {"steps": 40}, "epsilons": [0.1, 0.2, 0.3]},
    {"name": "cw", "params": {"steps": 100, "binary_search_steps": 9}},
    {"name": "deepfool", "params": {"steps": 50}},
    {"name": "jsma"},
]
#: attacks crafted on the black-box substitute (paper Table 4)
DEFAULT_SUBSTITUTE = [
    {"name": "fgsm", "epsilons": [0.1, 0.2, 0.3]},
    {"name": "pgd", "params": {"steps": 40}, "epsilons": [0.1, 0.2, 0.3]},
]
#: white-box attacks with BPDA gradients on the approximate model (and, for comparison, on the exact one)
DEFAULT_WHITEBOX = [
    {"name": "pgd", "params": {"steps": 100}, "epsilons": [0.1, 0.2, 0.3]},
]
#: query attacks run on the approximate model directly (and on the exact one for comparison)
DEFAULT_QUERY = [
    {"name": "square", "params": {"n_queries": 1000}, "epsilons": [0.1, 0.2, 0.3]},
    {"name": "hsj", "params": {"steps": 20, "max_evals": 2000}},
]
#: minimal-norm attacks (BPDA on the approximate model vs exact): the perturbation each model needs
DEFAULT_MINIMAL = [
    {"name": "deepfool", "params": {"steps": 50}},
    {"name": "cw", "params": {"steps": 100, "binary_search_steps": 9}},
]


def _spec_key(spec: dict) -> str:
    return json.dumps({k: spec.get(k) for k in ("name", "params", "norm", "epsilons", "targeted")},
                      sort_keys=True, default=str)


def _as_dict(spec) -> dict:
    if isinstance(spec, dict):
        return dict(spec)
    if isinstance(spec, (list, tuple)):
        return dict(zip(("name", "params", "norm", "epsilons", "targeted"), spec))
    raise AuditorError(f"an attack entry must be a mapping or (name, params, norm, epsilons), got {spec!r}",
                       where="approx audit")


def _rate(mask: np.ndarray, among: np.ndarray) -> float | None:
    n = int(among.sum())
    return float((mask & among).sum() / n) if n else None


class _Ctx:
    """What every part of the audit shares: data, verifiers, cached attack runs, candidates."""

    def __init__(self, exact, approx, x, y, seed):
        self.exact, self.approx, self.x, self.y, self.seed = exact, approx, x, y, seed
        self.v_exact = ort_classifier(exact.base_model, exact.preprocessing)
        self.v_approx = approx.verifier()
        self.bounds = (float(exact.bounds[0]), float(exact.bounds[1]))
        self.range = self.bounds[1] - self.bounds[0]
        self.shape = tuple(exact.input_shape)
        self.z_exact = self.v_exact.logits(x)
        self.z_approx = self.v_approx.logits(x)
        self.ok_exact = self.z_exact.argmax(1) == y
        self.ok_approx = self.z_approx.argmax(1) == y
        self.cache: dict = {}
        self.candidates: list[dict] = []
        self.masks: list[tuple[str, float, np.ndarray]] = []  # (norm, eps, fooled approx) per candidate

    def verify(self, which: str, x_adv, targets, norm=None, eps=None) -> np.ndarray:
        v = self.v_exact if which == "exact" else self.v_approx
        ok, _ = verified_success(v, self.x, x_adv, self.y, targets, norm, eps)
        return ok

    def run(self, model_key: str, model: Classifier, spec: dict, k: int, per_eps: bool = False):
        """(parsed spec, AttackResult, targets, seconds), cached per model and spec.

        ``per_eps``: a fixed-budget attack is run once per ε on every input (a transfer attacker
        spends the whole budget), instead of the nested-ball run that keeps the examples found at
        a smaller ε.
        """

        parsed = parse_attack(spec)
        attack = parsed["attack"]
        per_eps = bool(per_eps and not attack.minimal)  # minimal attacks search once whatever the ε
        key = (model_key, _spec_key(spec), per_eps)
        if key not in self.cache:
            targets = None
            if parsed["targeted"]:
                targets = choose_targets(parsed["targeted"], self.y, self.z_exact, self.seed + k)
            eps = parsed["epsilons"]
            t0 = time.perf_counter()
            if per_eps and eps is not None and len(eps) > 1:
                parts = [attack(model, self.x, self.y, [e], targets=targets, seed=self.seed + k) for e in eps]
                res = AttackResult([r.x_adv[0] for r in parts], [r.success[0] for r in parts],
                                   sum(r.queries for r in parts), attack.norm, [r.epsilons[0] for r in parts],
                                   targeted=targets is not None,
                                   queries_per_eps=[r.queries_per_eps[0] for r in parts], attack=attack.name,
                                   params=attack.params)
            else:
                res = attack(model, self.x, self.y, eps, targets=targets, seed=self.seed + k)
            self.cache[key] = (parsed, res, targets, time.perf_counter() - t0)
        return self.cache[key]

    def budget(self, norm: str, eps):
        """The ε at which a minimal attack's examples are counted for `strongest` (None = unbounded)."""
        if eps is not None:
            return float(eps)
        if norm in ("l2", "linf"):
            return float(default_epsilon(norm, self.shape, self.bounds))
        return None

    def add_candidate(self, source: str, attack: str, norm: str, eps, fooled: np.ndarray, queries=None):
        among = self.ok_approx
        rate = _rate(fooled, among)
        self.candidates.append({"source": source, "attack": attack, "norm": norm,
                                "epsilon": None if eps is None else float(eps), "bounded": eps is not None,
                                "success_rate": rate, "n_success": int((fooled & among).sum()),
                                "n_attacked": int(among.sum())})
        if eps is not None:
            self.masks.append((norm, float(eps), fooled & among))


def _transfer_section(ctx: _Ctx, specs, source_key: str, source: Classifier, k0: int, label: str) -> list[dict]:
    """Craft on ``source`` and measure success there and on the exact and approximate models."""
    out = []
    both = ctx.ok_exact & ctx.ok_approx
    for k, spec in enumerate(specs):
        parsed, res, targets, secs = ctx.run(source_key, source, spec, k0 + k, per_eps=True)
        attack = parsed["attack"]
        norm = attack.norm
        entry = {"attack": parsed["name"], "norm": norm, "params": _json_params(attack.params),
                 "targeted": parsed["targeted"], "minimal": bool(attack.minimal), "seconds": secs,
                 "queries_per_input": float(res.queries.mean()), "results": []}
        for j, eps in enumerate(res.epsilons):
            x_adv = res.x_adv[j]
            e_norm = norm if eps is not None else None
            if source_key == "exact":
                on_source = res.success[j] & ctx.verify("exact", x_adv, targets, e_norm, eps)
            else:  # the substitute's own fresh forward pass decided it
                on_source = res.success[j]
            fooled_exact = ctx.verify("exact", x_adv, targets, e_norm, eps)
            fooled_approx = ctx.verify("approx", x_adv, targets, e_norm, eps)
            r = {"epsilon": None if eps is None else float(eps),
                 "n_attacked": int(both.sum()),
                 "source_success_rate": _rate(on_source, both),
                 "exact_success_rate": _rate(fooled_exact, both),
                 "approx_success_rate": _rate(fooled_approx, both),
                 # paper Table 2 / 4: among the examples that fool the source model
                 "transfer_rate_exact": _rate(fooled_exact, both & on_source),
                 "transfer_rate_approx": _rate(fooled_approx, both & on_source),
                 "perturbation": perturbation_summary(x_adv, ctx.x, both & on_source, ctx.range)}
            entry["results"].append(r)
            b = ctx.budget(norm, eps)
            within = fooled_approx & (within_eps(x_adv, ctx.x, norm, b, ctx.bounds) if b is not None else True)
            ctx.add_candidate(label, parsed["name"], norm, b, within)
        out.append(entry)
    return out


def _json_params(p: dict) -> dict:
    return {k: v for k, v in p.items() if k not in ("progress",)}


def _direct_section(ctx: _Ctx, specs, k0: int, label: str) -> list[dict]:
    """Run attacks on the approximate model (BPDA gradients or queries) and on the exact model."""
    out = []
    for k, spec in enumerate(specs):
        pa, ra, ta, sa = ctx.run("approx", ctx.approx, spec, k0 + k)
        pe, re_, te, se = ctx.run("exact", ctx.exact, spec, k0 + k)
        attack = pa["attack"]
        norm = attack.norm
        entry = {"attack": pa["name"], "norm": norm, "params": _json_params(attack.params),
                 "targeted": pa["targeted"], "minimal": bool(attack.minimal), "query_based": bool(attack.query_based),
                 "seconds": {"approx": sa, "exact": se},
                 "queries_per_input": {"approx": float(ra.queries.mean()), "exact": float(re_.queries.mean())},
                 "results": []}
        for j, eps in enumerate(ra.epsilons):
            e_norm = norm if eps is not None else None
            fa = ra.success[j] & ctx.verify("approx", ra.x_adv[j], ta, e_norm, eps)
            fe = re_.success[j] & ctx.verify("exact", re_.x_adv[j], te, e_norm, eps)
            entry["results"].append({
                "epsilon": None if eps is None else float(eps),
                "approx": {"n_attacked": int(ctx.ok_approx.sum()), "success_rate": _rate(fa, ctx.ok_approx),
                           "perturbation": perturbation_summary(ra.x_adv[j], ctx.x, fa & ctx.ok_approx, ctx.range)},
                "exact": {"n_attacked": int(ctx.ok_exact.sum()), "success_rate": _rate(fe, ctx.ok_exact),
                          "perturbation": perturbation_summary(re_.x_adv[j], ctx.x, fe & ctx.ok_exact, ctx.range)},
            })
            b = ctx.budget(norm, eps)
            within = fa & (within_eps(ra.x_adv[j], ctx.x, norm, b, ctx.bounds) if b is not None else True)
            ctx.add_candidate(label, pa["name"], norm, b, within)
        out.append(entry)
    return out


def _mean(v) -> float | None:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _median(v) -> float | None:
    v = np.asarray(v, np.float64)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if len(v) else None


def _minimal_section(ctx: _Ctx, specs, k0: int) -> list[dict]:
    """Minimal perturbations: BPDA attack on the approximate model vs the same attack on the exact one."""
    out = []
    for k, spec in enumerate(specs):
        spec = dict(spec)
        spec["epsilons"] = None
        pa, ra, ta, sa = ctx.run("approx", ctx.approx, spec, k0 + k)
        pe, re_, te, se = ctx.run("exact", ctx.exact, spec, k0 + k)
        attack = pa["attack"]
        if not attack.minimal:
            raise AuditorError(f"{pa['name']} is not a minimal-norm attack", where="approx audit: minimal")
        norm = attack.norm
        fa = ra.success[0] & ctx.verify("approx", ra.x_min, ta) & ctx.ok_approx
        fe = re_.success[0] & ctx.verify("exact", re_.x_min, te) & ctx.ok_exact
        sa_ = perturbation_stats(ra.x_min, ctx.x, ctx.range)
        se_ = perturbation_stats(re_.x_min, ctx.x, ctx.range)
        both = fa & fe
        side = {}
        for name, f, st, n_ok in (("approx", fa, sa_, ctx.ok_approx), ("exact", fe, se_, ctx.ok_exact)):
            side[name] = {"n_attacked": int(n_ok.sum()), "n_success": int(f.sum()),
                          "success_rate": _rate(f, n_ok),
                          "median_l2": _median(st["l2"][f]), "mean_l2": _mean(st["l2"][f]),
                          "median_mse": _median(st["mse"][f]), "mean_mse": _mean(st["mse"][f]),
                          "mean_psnr": _mean(st["psnr"][f]), "median_psnr": _median(st["psnr"][f])}
        mse_e, mse_a = _mean(se_["mse"][both]), _mean(sa_["mse"][both])
        paired = {"n": int(both.sum()),
                  "mean_l2_difference": _mean(sa_["l2"][both] - se_["l2"][both]) if both.any() else None,
                  "l2_ratio_median": (_median(sa_["l2"][both] / np.maximum(se_["l2"][both], 1e-12))
                                      if both.any() else None),
                  "mse_ratio": (mse_a / mse_e) if (mse_e and mse_a is not None) else None,
                  "psnr_drop_db": (_mean(se_["psnr"][both] - sa_["psnr"][both]) if both.any() else None)}
        out.append({"attack": pa["name"], "norm": norm, "params": _json_params(attack.params),
                    "seconds": {"approx": sa, "exact": se}, "approx": side["approx"], "exact": side["exact"],
                    "paired": paired})
        b = ctx.budget(norm, None)
        within = fa & (within_eps(ra.x_min, ctx.x, norm, b, ctx.bounds) if b is not None else True)
        ctx.add_candidate("minimal", pa["name"], norm, b, within)
    return out


def _confidence(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The paper's confidence C = p[label] - max_{j != label} p[j] on softmax probabilities."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    return margins(p, y)


def approx_audit(exact: OnnxClassifier, approx: ApproxClassifier, x, y, attacks: list | None = None, seed: int = 0,
                 surrogate: Classifier | None = None, *, substitute_attacks: list | None = None,
                 whitebox_attacks: list | None = None, query_attacks: list | None = None,
                 minimal_attacks: list | None = None) -> dict:
    """Audit an approximate-multiplier deployment against its exact model (see the module doc).

    ``attacks``: specs (mappings ``{name, params, norm, epsilons, targeted}`` or tuples, as in
    :func:`auditor.pipeline.robustness.robustness_audit`) crafted on the exact model and transferred (default
    :data:`DEFAULT_TRANSFER`); ``surrogate``: a black-box substitute Classifier for
    ``substitute_attacks`` (default :data:`DEFAULT_SUBSTITUTE`); ``whitebox_attacks`` run with BPDA on
    the approximate model and, for comparison, on the exact one (default :data:`DEFAULT_WHITEBOX`);
    ``query_attacks`` likewise (default :data:`DEFAULT_QUERY`); ``minimal_attacks`` (default
    :data:`DEFAULT_MINIMAL`) give the perturbation each model needs.  Pass ``[]`` to skip a section.

    Every adversarial example counted against a model is re-verified by an independent forward
    pass: a plain onnxruntime session for the exact model, a separate ApproxModel instance for the
    approximate one.  Rates are over the clean-correct inputs of the model attacked (transfer
    entries: inputs both models classify correctly).  ``strongest`` is the attack with the highest
    verified success on the approximate model within a budget (minimal-norm attacks counted at
    the default ε of their norm); ``worst_case`` the per-budget union over all attacks.
    """
    if not isinstance(exact, Classifier) or not isinstance(approx, ApproxClassifier):
        raise AuditorError("approx_audit needs an exact Classifier and an ApproxClassifier", where="approx audit")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim < 2 or len(x) != len(y) or len(x) == 0:
        raise AuditorError(f"inputs {x.shape} and labels {y.shape} do not match", where="approx audit")
    if tuple(x.shape[1:]) != tuple(approx.input_shape) or tuple(exact.input_shape) != tuple(approx.input_shape):
        raise AuditorError(f"inputs of shape {tuple(x.shape[1:])} do not fit the models "
                           f"({tuple(exact.input_shape)} / {tuple(approx.input_shape)})", where="approx audit")

    t_start = time.perf_counter()
    ctx = _Ctx(exact, approx, x, y, seed)
    conf_e, conf_a = _confidence(ctx.z_exact, y), _confidence(ctx.z_approx, y)
    report = {
        "n": int(len(x)),
        "multiplier": approx.variant,
        "approx_layers": list(approx.approx_nodes),
        "clean": {
            "exact_accuracy": float(ctx.ok_exact.mean()),
            "approx_accuracy": float(ctx.ok_approx.mean()),
            "agreement": float((ctx.z_exact.argmax(1) == ctx.z_approx.argmax(1)).mean()),
            "max_abs_logit_difference": float(np.abs(ctx.z_exact - ctx.z_approx).max()),
        },
        "margins": {
            "exact": {"top_margin": summary(top_margin(ctx.z_exact)), "label_margin": summary(margins(ctx.z_exact, y)),
                      "confidence": summary(conf_e), "confidence_above_0.8": float((conf_e > 0.8).mean())},
            "approx": {"top_margin": summary(top_margin(ctx.z_approx)),
                       "label_margin": summary(margins(ctx.z_approx, y)),
                       "confidence": summary(conf_a), "confidence_above_0.8": float((conf_a > 0.8).mean())},
            "approx_more_confident": float((top_margin(ctx.z_approx) > top_margin(ctx.z_exact)).mean()),
        },
    }
    specs = [_as_dict(s) for s in (DEFAULT_TRANSFER if attacks is None else attacks)]
    report["transfer"] = _transfer_section(ctx, specs, "exact", exact, 0, "transfer")
    if surrogate is not None:
        sub = [_as_dict(s) for s in (DEFAULT_SUBSTITUTE if substitute_attacks is None else substitute_attacks)]
        report["substitute"] = _transfer_section(ctx, sub, "surrogate", surrogate, 100, "substitute")
    else:
        report["substitute"] = None
    wb = [_as_dict(s) for s in (DEFAULT_WHITEBOX if whitebox_attacks is None else whitebox_attacks)]
    report["whitebox_bpda"] = _direct_section(ctx, wb, 200, "whitebox_bpda")
    qa = [_as_dict(s) for s in (DEFAULT_QUERY if query_attacks is None else query_attacks)]
    report["query"] = _direct_section(ctx, qa, 300, "query")
    mn = [_as_dict(s) for s in (DEFAULT_MINIMAL if minimal_attacks is None else minimal_attacks)]
    report["perturbation"] = _minimal_section(ctx, mn, 400)

    cands = ctx.candidates
    bounded = [c for c in cands if c["bounded"] and c["success_rate"] is not None]
    strongest = None
    if bounded:
        strongest = max(bounded, key=lambda c: (c["success_rate"], -c["epsilon"]))
    report["candidates"] = cands
    report["strongest"] = strongest
    worst = {}
    for norm, eps in sorted({(n, e) for n, e, _ in ctx.masks}):
        union = np.zeros(len(x), bool)
        for n2, e2, m in ctx.masks:
            if n2 == norm and e2 <= eps * (1 + 1e-9):
                union |= m
        n_att = int(ctx.ok_approx.sum())
        worst[f"{norm}@{eps:g}"] = {"norm": norm, "epsilon": eps,
                                    "success_rate": float(union.sum() / n_att) if n_att else None,
                                    "robust_accuracy": float((ctx.ok_approx & ~union).mean())}
    report["worst_case"] = worst
    report["seconds"] = time.perf_counter() - t_start
    report["queries"] = {"exact": int(exact.queries), "approx": int(approx.queries)}
    return _jsonable(report)


__all__ = ["approx_audit", "DEFAULT_TRANSFER",
           "DEFAULT_SUBSTITUTE", "DEFAULT_WHITEBOX", "DEFAULT_QUERY", "DEFAULT_MINIMAL"]
