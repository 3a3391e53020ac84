"""The approximate-multiplier model as a :class:`Classifier`, its BPDA gradients, and its audit.

Defensive Approximation (Guesmi et al.): the products of the Conv / Gemm layers run on the Ax-FPM
approximate float32 multiplier (:mod:`auditor.axfpm`: bit-exact emulation, products accumulated in
float64, bias added exactly, one cast to float32).  Which layers are approximate and which
multiplier variant is used come from the hardware profile's ``approx:`` section
(:class:`auditor.hw.profile.Approx`; default: every Conv and Gemm, ``da-reference``).

:class:`ApproxClassifier`
    The same data flow as :class:`auditor.runtime.session.OnnxClassifier` (model -> ``preprocess.prepend``
    -> ``rewrite.instrument``), but the forward pass is the *approximate* execution
    (:class:`auditor.axfpm.execute.ApproxModel` over the instrumented model), so
    ``auditor.runtime.evaluate.evaluate`` and every cost model see the approximate activations, and every
    query-based attack queries the approximate model.

    Gradients (white-box attacks) are BPDA, Athalye et al. 2018: the forward pass is the
    approximate one and the backward pass is the exact network's vector-Jacobian product evaluated
    at the approximate forward's intermediate values, through one ONNX gradient graph per
    objective built on the rewrite of :func:`auditor.model.rewrite.bpda.bpda_model`.  One
    BPDA step costs one approximate forward pass plus one onnxruntime forward+backward.

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
import onnx

from ..attacks.evasion.base import default_epsilon
from ..attacks.primitives import margins, top_margin
from ..axfpm.execute import ApproxModel
from ..errors import AuditorError
from ..model.graph import tensor_shapes
from ..model.load import as_model, graph_inputs, prepare
from ..norms import norm as _norm
from ..norms import perturbation_stats
from ..model.rewrite.preprocess import Preprocessing, prepend
from ..model.rewrite.instrument import instrument
from ..model.names import name_nodes
from ..model.rewrite.bpda import bpda_model
from ..runtime.session import (GRAD_INPUT, OnnxClassifier, Runner, build_timer, gradient_model, knob_feeds,
                      logits_head)
from ..runtime.classifier import Classifier
from .stats import perturbation_summary, summary
from ..runtime.engine import run_batches

def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose nodes all carry the unique names ApproxModel and the layer table use."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    name_nodes(out.graph)
    return out


def _approx_settings(approx) -> tuple[str, list[str] | None]:
    if approx is None:
        return "da-reference", None
    variant = getattr(approx, "multiplier", None)
    if variant is None and isinstance(approx, dict):
        variant = approx.get("multiplier", "da-reference")
        layers = approx.get("layers")
    else:
        layers = getattr(approx, "layers", None)
    from ..axfpm import MULTIPLIERS

    if variant not in MULTIPLIERS:
        raise AuditorError(f"unknown multiplier {variant!r} (known: {', '.join(MULTIPLIERS)})", where="approx")
    if layers is not None:
        if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
            raise AuditorError(f"layers must be a list of node names, got {layers!r}", where="approx")
        layers = list(layers)
    return variant, layers


class ApproxClassifier(Classifier):
    """A :class:`Classifier` whose forward pass runs the approximate multiplier (see the module doc).

    ``approx``: an :class:`auditor.hw.profile.Approx` (or a mapping with ``multiplier`` and
    ``layers``); None = every Conv and Gemm node on the ``da-reference`` multiplier.  Layer names are
    the node names of the model as loaded (``<op_type>_<index>`` for unnamed nodes).
    """

    def __init__(self, model, preprocessing: Preprocessing | None = None, approx=None, *,
                 threads: int = 0, batch_size: int = 64, sparsity_f: str = "tanh"):
        super().__init__()
        self._rate = [0.0]  # seconds per input measured by _run: the estimate of the next batch's time
        self.preprocessing = preprocessing or Preprocessing()
        self.variant, layers = _approx_settings(approx)
        if isinstance(model, onnx.ModelProto):
            model = prepare(model, input_size=self.preprocessing.input_size,  # as load_model does for files
                            layout=self.preprocessing.layout)
        base = _named(as_model(model, input_size=self.preprocessing.input_size, layout=self.preprocessing.layout))
        self.base_model = base
        self.model, self.head = logits_head(prepend(base, self.preprocessing))
        self.instrumented, self.probes = instrument(self.model)
        self.threads, self.batch_size, self.sparsity_f = threads, max(int(batch_size), 1), sparsity_f
        self._ort_threads = int(threads) if threads else None
        self.approx_model = ApproxModel(self.instrumented, layers, self.variant,
                                        intra_op_threads=self._ort_threads)
        #: names of the approximated nodes, in graph order
        self.approx_nodes: tuple[str, ...] = self.approx_model.approx_nodes
        self.logits_name = self.model.graph.output[0].name
        self.input_name = graph_inputs(self.model)[0].name
        self.bounds = self.preprocessing.bounds
        dims = graph_inputs(self.model)[0].type.tensor_type.shape.dim
        d0 = dims[0].dim_value if len(dims) and dims[0].HasField("dim_value") else 0
        self.fixed_batch = int(d0) if d0 > 0 else None
        shapes = tensor_shapes(onnx.shape_inference.infer_shapes(self.model))
        self.input_shape = tuple(int(d) for d in shapes[self.input_name][1:])
        out_shape = shapes.get(self.logits_name)
        self.num_classes = int(out_shape[-1]) if out_shape and isinstance(out_shape[-1], int) else None
        if self.num_classes is None:
            self.num_classes = int(self._run(np.zeros((1,) + self.input_shape, np.float32))
                                   [self.logits_name].shape[-1])
        self.activation_names = list(self.probes.layer_inputs)
        self._bpda: tuple[onnx.ModelProto, dict[str, str]] | None = None
        self._grad_runners: dict[str, tuple[Runner, str, dict]] = {}

    @property
    def layers(self):
        return self.probes.layers

    @property
    def layer_tensors(self) -> list[str]:
        return list(self.probes.layer_tensors)

    # --- forward ---------------------------------------------------------------------------
    def _run(self, x: np.ndarray, outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Approximate run of the instrumented model over ``x`` in batches (graph outputs + ``outputs``)."""
        return run_batches(lambda xb, _: self.approx_model.run(xb, outputs), x, self.batch_size,
                           fixed_batch=self.fixed_batch, check=self._check_deadline, rate=self._rate)

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and every probed tensor (activations, compute-layer inputs), approximate execution."""
        self._check_deadline()
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self._run(x)

    def _logits(self, x):
        self._check_deadline()
        return self._run(x)[self.logits_name]

    def activations(self, x):
        out = self.forward(x)
        return {k: out[k] for k in self.activation_names}

    # --- BPDA gradients --------------------------------------------------------------------
    def _objective_spec(self, objective: str):
        return OnnxClassifier._objective_spec(self, objective)  # same objectives, same knobs

    @property
    def bpda(self) -> tuple[onnx.ModelProto, dict[str, str]]:
        """The BPDA forward model (before the objective) and its feeds (input -> approximate tensor)."""
        if self._bpda is None:
            self._bpda = bpda_model(self.model, self.approx_nodes)
        return self._bpda

    def _grad_runner(self, objective: str):
        if objective not in self._grad_runners:
            model, _ = self.bpda
            with build_timer(self):
                g, obj_name, knobs = gradient_model(model, self._objective_spec(objective), self.logits_name,
                                                    wrt=self.input_name)
                self._grad_runners[objective] = (Runner(g, self.threads, self.batch_size), obj_name, knobs)
        return self._grad_runners[objective]

    def _value_and_grad(self, x, objective, knobs):
        self._check_deadline()
        runner, obj_name, _ = self._grad_runner(objective)
        _, bpda_feeds = self.bpda
        feeds = knob_feeds(objective, knobs)  # the exact classifier's knobs and types
        if bpda_feeds:
            fwd = self._run(x, sorted(set(bpda_feeds.values())))
            for inp, tensor in bpda_feeds.items():
                feeds[inp] = fwd[tensor]
        out = runner.run(x, [obj_name, GRAD_INPUT, self.logits_name], feeds=feeds, check=self._check_deadline)
        return out[obj_name], out[GRAD_INPUT], out[self.logits_name]

    # --- independent verification ----------------------------------------------------------
    def verifier(self) -> "ApproxLogits":
        """A logits-only classifier over a *separate* ApproxModel of the plain (not instrumented)
        model: an independent forward pass to re-verify adversarial examples."""
        return ApproxLogits(self.model, list(self.approx_nodes), self.variant, self.bounds,
                            self.input_shape, self.num_classes, threads=self._ort_threads,
                            batch_size=self.batch_size, fixed_batch=self.fixed_batch)


class ApproxLogits(Classifier):
    """Logits of the approximate model from its own ApproxModel instance (no gradients)."""

    def __init__(self, model: onnx.ModelProto, approx_nodes, variant: str, bounds, input_shape, num_classes, *,
                 threads=None, batch_size: int = 64, fixed_batch=None):
        super().__init__()
        self.approx_model = ApproxModel(model, approx_nodes, variant, intra_op_threads=threads)
        self.logits_name = model.graph.output[0].name
        self.bounds, self.input_shape, self.num_classes = bounds, tuple(input_shape), num_classes
        self.batch_size, self.fixed_batch = batch_size, fixed_batch

    def _logits(self, x):
        if not len(x):
            return np.zeros((0, self.num_classes), np.float32)
        return run_batches(lambda xb, _: {"z": self.approx_model.run(xb)[self.logits_name]}, x, self.batch_size,
                           fixed_batch=self.fixed_batch)["z"]

    def _value_and_grad(self, x, objective, knobs):
        raise AuditorError("the verification classifier has no gradients", where="approx")


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
        from .robustness import ort_classifier

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
        from .robustness import verified_success

        v = self.v_exact if which == "exact" else self.v_approx
        ok, _ = verified_success(v, self.x, x_adv, self.y, targets, norm, eps)
        return ok

    def run(self, model_key: str, model: Classifier, spec: dict, k: int, per_eps: bool = False):
        """(parsed spec, AttackResult, targets, seconds), cached per model and spec.

        ``per_eps``: a fixed-budget attack is run once per ε on every input (a transfer attacker
        spends the whole budget), instead of the nested-ball run that keeps the examples found at
        a smaller ε.
        """
        from ..attacks.evasion.base import AttackResult
        from .robustness import parse_attack, choose_targets

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
            within = fooled_approx & ((_norm(x_adv - ctx.x, norm) <= b * (1 + 1e-5) + 1e-6) if b is not None
                                      else True)
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
            within = fa & ((_norm(ra.x_adv[j] - ctx.x, norm) <= b * (1 + 1e-5) + 1e-6) if b is not None else True)
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
        within = fa & ((_norm(ra.x_min - ctx.x, norm) <= b * (1 + 1e-5) + 1e-6) if b is not None else True)
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
    from .robustness import _jsonable

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


__all__ = ["ApproxClassifier", "ApproxLogits", "approx_audit", "DEFAULT_TRANSFER",
           "DEFAULT_SUBSTITUTE", "DEFAULT_WHITEBOX", "DEFAULT_QUERY", "DEFAULT_MINIMAL"]
