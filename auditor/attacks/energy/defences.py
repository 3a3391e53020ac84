"""Defences against sparsity attacks (Krithivasan et al., Section IV) and how to score them.

* Activation thresholding — every ReLU(x) becomes x * (x > t_l): activations at or below a
  per-layer threshold t_l are zeroed (t_l = 0 is the plain ReLU).
  :func:`auditor.model.rewrite.threshold.threshold_relus` rewrites an ONNX model; :func:`tune_thresholds` picks t_l layer by layer — starting, as in the
  paper, at the layer's mean activation on the adversarial set, then doubling / bisecting — as
  high as a clean-accuracy loss budget allows.
* Input quantisation — x_q = round(2^k x) / 2^k  (eq. 9), :func:`quantize_input`.
* Input compression — JPEG re-encoding at quality q (Pillow), :func:`jpeg_compress`.
* :func:`recovery` — the share of an attack's cost increase that a defence removes.

The defences a scenario names (``defences:`` of an energy search) are registered in ``DEFENCES``
with their parameters declared once (:class:`auditor.attacks.base.Param`), as attacks and
searches are; :func:`make_defence` builds one.
"""

from __future__ import annotations

import io
from typing import Callable, ClassVar

import numpy as np
import onnx

from ...errors import AuditorError
from ...model.rewrite.instrument import add_outputs
from ...model.rewrite.preprocess import to_model_input
from ...model.rewrite.threshold import relu_nodes, threshold_input, threshold_relus
from ...registry import Registry
from ...runtime.engine import Runner
from ..base import Configurable, Param, registrar


def tune_thresholds(model: onnx.ModelProto, x_val: np.ndarray, labels: np.ndarray | None = None, *,
                    budget: float = 0.01, x_attack: np.ndarray | None = None, preprocess=None,
                    steps: int = 8, batch_size: int = 256) -> tuple[onnx.ModelProto, dict[str, float], dict]:
    """Per-layer activation thresholds within a clean-accuracy loss budget.

    ``x_val``/``labels``: clean validation inputs (raw; ``preprocess`` — a callable or an object with
    ``apply`` — maps them to the model's input) and their labels; without labels, agreement with
    the undefended model's predictions is the accuracy.  ``budget``: tolerated accuracy loss (a
    fraction, e.g. 0.01).  Layers are tuned greedily in graph order, layer l allowed a cumulative
    loss of budget*(l+1)/L, each threshold starting at the layer's mean activation on
    ``x_attack`` (default ``x_val``), doubled while the budget holds, then bisected ``steps`` times.

    Returns (defended model, thresholds by Relu output, report with the accuracies).
    """
    if not 0 <= budget <= 1:
        raise AuditorError(f"accuracy-loss budget must be in [0, 1], got {budget}")
    relus = relu_nodes(model)
    if not relus:
        raise AuditorError("the model has no Relu to threshold")
    outs = [o for _, o in relus]
    logits_name = model.graph.output[0].name
    xv = to_model_input(x_val, preprocess)
    xa = xv if x_attack is None else to_model_input(x_attack, preprocess)

    runner = Runner(add_outputs(model, outs), 1, batch_size)
    sums = {o: 0.0 for o in outs}
    counts = {o: 0 for o in outs}
    for s in range(0, len(xa), runner.batch_size):  # only the running sums outlive a batch
        res = runner.run(xa[s:s + runner.batch_size], outs)
        for o in outs:
            sums[o] += float(res[o].sum())
            counts[o] += res[o].size
    mean_act = {o: sums[o] / max(counts[o], 1) for o in outs}

    tuned = threshold_relus(model, {o: 0.0 for o in outs}, as_inputs=True)
    truns = Runner(tuned, 1, batch_size)

    def predict(th: dict[str, float]) -> np.ndarray:
        feeds = {threshold_input(o): np.array(th[o], np.float32) for o in outs}
        return truns.run(xv, [logits_name], feeds=feeds)[logits_name].argmax(1)

    th = {o: 0.0 for o in outs}
    base_pred = predict(th)
    ref = base_pred if labels is None else np.asarray(labels)
    base_acc = float((base_pred == ref).mean())

    def ok(cand: dict[str, float], allowed: float) -> bool:
        return base_acc - float((predict(cand) == ref).mean()) <= allowed + 1e-12

    L = len(outs)
    for li, o in enumerate(outs):
        allowed = budget * (li + 1) / L
        t = mean_act[o]
        if t <= 0:
            continue
        good, bad = 0.0, None
        for _ in range(20):  # grow while the budget holds
            if ok({**th, o: t}, allowed):
                good, t = t, 2 * t
            else:
                bad = t
                break
        if bad is None:
            th[o] = good
            continue
        for _ in range(int(steps)):
            mid = (good + bad) / 2
            if ok({**th, o: mid}, allowed):
                good = mid
            else:
                bad = mid
        th[o] = good
    final_acc = float((predict(th) == ref).mean())
    report = {"accuracy_clean": base_acc, "accuracy_defended": final_acc, "budget": budget,
              "mean_activation": mean_act, "thresholds": dict(th)}
    return threshold_relus(model, th), th, report


# --------------------------------------------------------------------------------------------
# Input smoothing
# --------------------------------------------------------------------------------------------


def quantize_input(x: np.ndarray, bits: int, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """k-bit input quantisation x_q = round(2^k x) / 2^k (eq. 9), on the pixel range mapped to [0, 1].

    numpy rounds halves to even.  Idempotent; |x_q - x| <= 2^-(k+1) (in [0, 1] units).
    """
    bits = int(bits)
    if not 1 <= bits <= 24:
        raise AuditorError(f"quantisation bits must be in 1..24, got {bits}")
    lo, hi = float(bounds[0]), float(bounds[1])
    u = (np.asarray(x, np.float64) - lo) / (hi - lo)
    q = np.round(u * 2 ** bits) / 2 ** bits
    return (q * (hi - lo) + lo).astype(np.float32)


def jpeg_compress(x: np.ndarray, quality: int, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """JPEG re-encoding at ``quality`` (1..100) with Pillow, image by image (N, C, H, W).

    Pixels are mapped to 0..255 and rounded; 1 channel is encoded as grey, 3 as RGB, any other
    count channel by channel.  The output is back in the pixel range, float32, same shape.
    """
    from PIL import Image

    q = int(quality)
    if not 1 <= q <= 100:
        raise AuditorError(f"JPEG quality must be in 1..100, got {quality}")
    x = np.asarray(x, np.float64)
    if x.ndim != 4:
        raise AuditorError(f"JPEG compression needs images (N, C, H, W), got shape {x.shape}")
    lo, hi = float(bounds[0]), float(bounds[1])
    u8 = np.clip(np.round((x - lo) / (hi - lo) * 255.0), 0, 255).astype(np.uint8)

    def code(img: np.ndarray, mode: str) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(img, mode=mode).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        return np.asarray(Image.open(buf).convert(mode))

    out = np.empty_like(u8)
    n, c = x.shape[:2]
    for i in range(n):
        if c == 3:
            out[i] = code(np.ascontiguousarray(u8[i].transpose(1, 2, 0)), "RGB").transpose(2, 0, 1)
        else:
            for ch in range(c):
                out[i, ch] = code(np.ascontiguousarray(u8[i, ch]), "L")
    return (out.astype(np.float64) / 255.0 * (hi - lo) + lo).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The defences a scenario can name
# --------------------------------------------------------------------------------------------

#: every defence a scenario's ``defences:`` entry can name (names and other spellings)
DEFENCES: "Registry[type[Defence]]" = Registry("defence")
register_defence = registrar(DEFENCES)


class Defence(Configurable):
    """A defence and its parameters.  An *input* defence maps raw inputs to raw inputs
    (``defence(x, bounds)``); a *model* defence (``on_input = False``) builds a defended model
    (:meth:`defend`)."""

    kind = "defence"
    on_input: ClassVar[bool] = True

    def __call__(self, x: np.ndarray, bounds: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
        raise AuditorError("is not an input defence", self.where)

    def defend(self, model: "onnx.ModelProto", x_val: np.ndarray, labels: np.ndarray | None, preprocess=None):
        raise AuditorError("is not a model defence", self.where)


@register_defence("quantize", aliases=("quantise", "quantization", "quantisation"))
class InputQuantization(Defence):
    """input quantisation to k bits: x_q = round(2^k x) / 2^k"""

    PARAMS = {"bits": Param("int", None, "bits per pixel kept", low=1, high=24, required=True)}

    def __call__(self, x, bounds=(0.0, 1.0)):
        return quantize_input(x, self.bits, bounds)


@register_defence("jpeg", aliases=("compression", "jpeg_compression"))
class JPEGCompression(Defence):
    """JPEG compression of the input at a quality"""

    PARAMS = {"quality": Param("int", None, "JPEG quality", low=1, high=100, required=True)}

    def __call__(self, x, bounds=(0.0, 1.0)):
        return jpeg_compress(x, self.quality, bounds)


@register_defence("threshold", aliases=("activation_threshold",))
class ActivationThreshold(Defence):
    """per-layer ReLU thresholds tuned to a clean-accuracy loss budget"""

    on_input = False
    PARAMS = {"budget": Param("float", 0.01, "clean-accuracy loss allowed, e.g. 0.01", low=0.0, high=1.0)}

    def defend(self, model, x_val, labels, preprocess=None):
        """The defended model (thresholds tuned on ``x_val``): see :func:`tune_thresholds`."""
        return tune_thresholds(model, x_val, labels, budget=self.budget, preprocess=preprocess)[0]


def make_defence(name: str, **params) -> Defence:
    """The defence called ``name`` with ``params`` (AuditorError for unknown names or parameters)."""
    return DEFENCES.get(name)(**params)


def make_input_defence(name: str, **params) -> Callable[[np.ndarray], np.ndarray]:
    """``make_input_defence("quantize", bits=4)`` / ``("jpeg", quality=75)`` -> x -> x' (raw domain).

    Optional ``bounds`` (the pixel range).  AuditorError for unknown names or parameters, and for
    a defence that is not an input defence."""
    bounds = tuple(params.pop("bounds", (0.0, 1.0)))
    defence = make_defence(name, **params)
    if not defence.on_input:
        raise AuditorError("is a model defence, not an input defence", defence.where)
    return lambda x: defence(x, bounds)


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def recovery(clean_cost, attacked_cost, defended_attacked_cost) -> float:
    """Share of the attack's cost increase that the defence removes (on the means):

        (attacked - defended_attacked) / (attacked - clean)

    1 = fully recovered, 0 = no effect, < 0 = the defence made it worse, > 1 = below the clean
    cost.  NaN when the attack did not raise the cost.
    """
    c = float(np.mean(clean_cost))
    a = float(np.mean(attacked_cost))
    d = float(np.mean(defended_attacked_cost))
    inc = a - c
    if not inc > 0:
        return float("nan")
    return (a - d) / inc
