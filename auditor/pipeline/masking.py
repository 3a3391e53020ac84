"""Is this defence real?  The gradient-masking diagnosis of a deployed model.

Athalye, Carlini & Wagner (ICML 2018) and Carlini et al., "On Evaluating Adversarial Robustness"
(2019) list the signs that a robustness number comes from masked gradients rather than from a
model that is hard to attack.  :func:`masking_diagnosis` runs the attacks those checks need on
one deployed model (every adversarial example re-verified by the independent forward pass of
:func:`auditor.pipeline.robustness.robustness_audit`) and returns a verdict naming the checks that fired,
with the numbers behind each:

``one_step_beats_iterative``
    FGSM succeeds more often than PGD at the same ε and with the same loss (an iterative attack
    that does worse than its own first step is not following a useful gradient).
``blackbox_beats_whitebox``
    a gradient-free attack (Square, on the deployed model itself) or a transfer attack (PGD
    crafted on the plain exact model, when there is one) succeeds more often than the best
    white-box PGD.
``large_eps_not_broken``
    robust accuracy under white-box PGD (margin loss) is still above the tolerance at ε = half
    the pixel range (Linf), where any sound attack succeeds almost always.
``naive_weaker_than_adaptive``
    the naive attack is weaker than the adaptive one: FGSM / PGD with the plain cross-entropy
    gradient (``loss: ce_raw``, as the defence papers ran them) against the same attack with the
    margin loss, which does not saturate with the softmax; on approximate hardware also transfer
    from the exact model (how Defensive Approximation evaluated) against BPDA white-box and
    query attacks on the approximate model itself.

A check fires when the stronger-than-expected attack beats the other by more than ``tolerance``
(a fraction of the clean-correct inputs, at least two inputs).  For approximate hardware the
section also lists the minimal perturbation (L2, MSE, PSNR) DeepFool needs on the exact and
(with BPDA) on the approximate model.

The returned dict (``masking`` of a profile in the JSON report)::

    {verdict: "gradient masking" | "no sign of gradient masking", fired: [check names],
     epsilon, large_epsilon, norm, n, tolerance,
     checks: [{check, fired, evidence (one line), stronger, weaker: {attack: success rate}}],
     success: {attack label: success rate at epsilon}, minimal: {model: {median_l2, ...}}}
"""

from __future__ import annotations

import numpy as np

from ..attacks.evasion import PGD
from ..attacks.evasion.base import default_epsilon
from ..errors import AuditorError
from .deployed import budget, deployed
from .robustness import robustness_audit, transfer
from .units import AuditContext, Unit
from ..runtime.classifier import Classifier
from ..runtime.session import OnnxClassifier
from ..runtime.verify import ort_classifier

CHECKS = ("one_step_beats_iterative", "blackbox_beats_whitebox", "large_eps_not_broken", "naive_weaker_than_adaptive")


def _rate(report: dict, k: int, j: int = 0) -> float:
    return float(report["attacks"][k]["results"][j]["attack_success_rate"])


def masking_diagnosis(model: Classifier, x, y, *, verify: Classifier | None = None, exact: Classifier | None = None,
                      exact_verify: Classifier | None = None, approximate: bool = False, epsilon: float | None = None,
                      norm: str = "linf", steps: int = 20, n_queries: int = 500, tolerance: float = 0.05,
                      seed: int = 0) -> dict:
    """The checks of the module docstring on ``model`` (the deployed classifier; its gradients are
    BPDA ones on approximate hardware) for inputs ``x`` with labels ``y``.

    ``verify``: the independent classifier re-checking every example (default ``model``);
    ``exact``/``exact_verify``: the plain exact model, for the transfer attack (None: no transfer
    row); ``approximate``: the model runs on approximate hardware (adds the transfer-vs-BPDA
    comparison and the minimal perturbations); ``epsilon`` default: a third of the RobustBench
    budget (MNIST Linf 0.1), where attacks on an undefended model neither all fail nor all succeed.
    """
    if norm not in ("linf", "l2"):
        raise AuditorError(f"the masking diagnosis works in linf or l2, not {norm!r}", where="masking")
    x = np.asarray(x, np.float32)
    y = np.asarray(y).astype(np.int64)
    verify = verify or model
    shape = tuple(model.input_shape)
    lo, hi = float(model.bounds[0]), float(model.bounds[1])
    eps = float(epsilon) if epsilon is not None else default_epsilon(norm, shape, (lo, hi)) / 3.0
    big = 0.5 * (hi - lo)
    attacks = [
        {"name": "fgsm", "norm": norm, "epsilons": [eps], "params": {"loss": "ce_raw"}},
        {"name": "fgsm", "norm": norm, "epsilons": [eps], "params": {"loss": "margin"}},
        {"name": "pgd", "norm": norm, "epsilons": [eps], "params": {"steps": steps, "loss": "ce_raw"}},
        {"name": "pgd", "norm": norm, "epsilons": [eps], "params": {"steps": steps, "loss": "margin"}},
        {"name": "square", "norm": norm, "epsilons": [eps], "params": {"n_queries": n_queries}},
        {"name": "pgd", "norm": "linf", "epsilons": [big], "params": {"steps": steps, "loss": "margin"}},
    ]
    labels = ["fgsm_ce", "fgsm_margin", "pgd_ce", "pgd_margin", "square", "pgd_margin_large"]
    rep = robustness_audit(model, x, y, attacks, verify=verify, seed=seed)
    n_correct = rep["attacks"][0]["results"][0]["n_attacked"]
    success = {lab: _rate(rep, k) for k, lab in enumerate(labels)}
    robust_large = float(rep["attacks"][5]["results"][0]["robust_accuracy"])
    clean_correct = None
    if exact is not None:
        ev = exact_verify or exact
        res = PGD(norm=norm, steps=steps, loss="margin")(exact, x, y, [eps], seed=seed + 101)
        clean_correct = verify.predict(x) == y
        rate = transfer(res.x_adv[0], y, verify, mask=clean_correct)
        success["transfer_from_exact"] = None if not np.isfinite(rate) else float(rate)
        success["pgd_margin_on_exact"] = float(np.mean((ev.predict(res.x_adv[0]) != y)[ev.predict(x) == y])) \
            if np.any(ev.predict(x) == y) else None
    tol = max(float(tolerance), 2.0 / max(n_correct, 1))
    checks = []

    def compare(check, stronger: dict, weaker: dict, text):
        s = {k: v for k, v in stronger.items() if v is not None}
        w = {k: v for k, v in weaker.items() if v is not None}
        fired = bool(s and w and max(s.values()) > max(w.values()) + tol)
        checks.append({"check": check, "fired": fired, "stronger": s, "weaker": w, "evidence": text(s, w)})

    def pct(v):
        return f"{100 * v:.0f}%"

    compare("one_step_beats_iterative", {"fgsm_ce": success["fgsm_ce"], "fgsm_margin": success["fgsm_margin"]},
            {"pgd_ce": success["pgd_ce"], "pgd_margin": success["pgd_margin"]},
            lambda s, w: f"at eps {eps:g}: FGSM succeeds on {pct(max(s.values()))}, PGD-{steps} on "
                         f"{pct(max(w.values()))}")
    black = {"square": success["square"]}
    if "transfer_from_exact" in success:
        black["transfer_from_exact"] = success["transfer_from_exact"]
    compare("blackbox_beats_whitebox", black, {"pgd_ce": success["pgd_ce"], "pgd_margin": success["pgd_margin"]},
            lambda s, w: f"at eps {eps:g}: black-box/transfer " + ", ".join(f"{k} {pct(v)}" for k, v in s.items())
                         + f" vs white-box PGD {pct(max(w.values()))}")
    checks.append({"check": "large_eps_not_broken", "fired": bool(robust_large > tol),
                   "stronger": {}, "weaker": {"pgd_margin_large": success["pgd_margin_large"]},
                   "robust_accuracy": robust_large,
                   "evidence": f"robust accuracy under PGD-{steps} (margin) at Linf {big:g} (half the pixel range): "
                               f"{pct(robust_large)}"})
    adaptive = {"fgsm_margin": success["fgsm_margin"], "pgd_margin": success["pgd_margin"]}
    naive = {"fgsm_ce": success["fgsm_ce"], "pgd_ce": success["pgd_ce"]}
    gaps = [(success["fgsm_margin"] - success["fgsm_ce"], "FGSM"), (success["pgd_margin"] - success["pgd_ce"], "PGD")]
    if approximate:
        adaptive.update({"square": success["square"]})
        if success.get("transfer_from_exact") is not None:
            naive = {"transfer_from_exact": success["transfer_from_exact"]}
    fired = any(g > tol for g, _ in gaps) or (approximate and bool(naive) and bool(adaptive)
                                              and max(adaptive.values()) > max(naive.values()) + tol)
    text = "; ".join(f"{name} with the cross-entropy gradient succeeds on "
                     f"{pct(success[name.lower() + '_ce'])}, with the margin loss on "
                     f"{pct(success[name.lower() + '_margin'])}" for _, name in gaps)
    if approximate and success.get("transfer_from_exact") is not None:
        text += (f"; transfer from the exact model {pct(success['transfer_from_exact'])} vs BPDA PGD "
                 f"{pct(max(success['pgd_ce'], success['pgd_margin']))} and Square {pct(success['square'])} on the "
                 "approximate model")
    checks.append({"check": "naive_weaker_than_adaptive", "fired": bool(fired), "stronger": adaptive, "weaker": naive,
                   "evidence": f"at eps {eps:g}: {text}"})
    out = {
        "epsilon": eps, "large_epsilon": big, "norm": norm, "n": int(len(x)), "n_attacked": int(n_correct),
        "tolerance": tol, "steps": steps, "n_queries": n_queries, "success": success, "checks": checks,
        "fired": [c["check"] for c in checks if c["fired"]],
    }
    if approximate:
        mins = {}
        spec = [{"name": "deepfool", "params": {"steps": 50}}]
        mins["approximate_bpda"] = robustness_audit(model, x, y, spec, verify=verify, seed=seed)["attacks"][0]
        if exact is not None:
            mins["exact"] = robustness_audit(exact, x, y, spec, verify=exact_verify or exact, seed=seed)["attacks"][0]
        out["minimal"] = {k: {key: (v["minimal_perturbation"][key]["quantiles"]["0.5"]
                                    if key in ("l2", "mse", "psnr") else v["minimal_perturbation"][key])
                              for key in ("median_l2", "l2", "mse", "psnr", "n_success", "n_attacked")}
                          for k, v in mins.items()}
    out["verdict"] = "gradient masking" if out["fired"] else "no sign of gradient masking"
    return out


def deployed_is_plain(profile) -> bool:
    """Whether a hardware profile deploys the model unchanged (no reshape:, exact arithmetic)."""
    r = getattr(profile, "reshape", None)
    reshaped = r is not None and (r.hashnet_ratio is not None or r.gradient_inhibition_tau is not None
                                  or getattr(r, "quantize_bits", None) is not None)
    ap = getattr(profile, "approx", None)
    return not reshaped and (ap is None or ap.multiplier == "exact")


def runs_masking(sc, profile) -> bool:
    """Whether the scenario's diagnosis runs on ``profile`` (``robustness.masking.run``: auto =
    the profiles that do not deploy the plain exact model)."""
    if sc.robustness is None:
        return False
    run = sc.robustness.masking.run
    return run == "always" or (run == "auto" and not deployed_is_plain(profile))


def run_masking(clf: Classifier, verifier: Classifier, proto, profile, data, sc, seed: int, threads: int = 0) -> dict:
    """The scenario's diagnosis on one profile's deployed classifier: the ``masking`` section."""
    rb = sc.robustness
    mk = rb.masking
    if data.y is None:
        raise AuditorError("the gradient-masking diagnosis needs labelled data", where="scenario robustness.masking")
    n = min(mk.count or rb.count, len(data.x))
    exact = exact_v = None
    if not deployed_is_plain(profile):
        exact = OnnxClassifier(proto, sc.preprocessing, threads=threads, batch_size=sc.batch_size)
        exact_v = ort_classifier(proto, sc.preprocessing)
    ap = getattr(profile, "approx", None)
    section = masking_diagnosis(clf, data.x[:n], data.y[:n], verify=verifier, exact=exact, exact_verify=exact_v,
                                approximate=ap is not None and ap.multiplier != "exact", epsilon=mk.epsilon,
                                norm=mk.norm, steps=mk.steps, n_queries=mk.n_queries, tolerance=mk.tolerance,
                                seed=seed)
    section["count"] = n
    return section


def masking_unit(ctx: AuditContext, u: Unit, deadline) -> dict:
    """The gradient-masking diagnosis of a profile, as a unit of the audit."""
    st = deployed(ctx, u.profile)
    with budget(st.clf, deadline):
        return run_masking(st.clf, st.verifier, ctx.proto, st.prof, ctx.data, ctx.scenario, ctx.seed, ctx.threads)
