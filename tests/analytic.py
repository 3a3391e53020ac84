"""Small analytic classifiers with exact gradients, shared by the attack, search and robustness
tests (their gradients are checked against finite differences in tests/attacks/test_attacks_models.py
and tests/attacks/test_sponge_searches.py)."""

from __future__ import annotations

import numpy as np

from auditor.runtime.classifier import Classifier


def objective_and_dz(z: np.ndarray, objective: str, knobs: dict):
    """Per-sample value and d value / d logits for the objectives of the Classifier protocol."""
    z = np.asarray(z, np.float64)
    n, c = z.shape
    rows = np.arange(n)
    dz = np.zeros_like(z)
    if objective == "ce":
        t = np.asarray(knobs["target"])
        zs = z - z.max(axis=1, keepdims=True)
        p = np.exp(zs)
        value = np.log(p.sum(axis=1)) - zs[rows, t]
        p /= p.sum(axis=1, keepdims=True)
        dz = p.copy()
        dz[rows, t] -= 1.0
    elif objective == "margin":
        lab = np.asarray(knobs["label"])
        kappa = float(knobs.get("kappa", 0.0))
        other = z.copy()
        other[rows, lab] = -np.inf
        j = other.argmax(axis=1)
        m = z[rows, lab] - z[rows, j]
        value = np.maximum(m, -kappa)
        live = m > -kappa
        dz[rows, lab] = live
        dz[rows, j] = -1.0 * live
    elif objective == "logit":
        idx = np.asarray(knobs["index"])
        value = z[rows, idx]
        dz[rows, idx] = 1.0
    else:
        raise ValueError(objective)
    return value, dz


class LinearSoftmax(Classifier):
    """z = W x + b on the flattened input."""

    def __init__(self, W, b, input_shape, bounds=(0.0, 1.0)):
        super().__init__()
        self.W = np.asarray(W, np.float64)
        self.b = np.asarray(b, np.float64)
        self.input_shape = tuple(input_shape)
        self.num_classes = self.W.shape[0]
        self.bounds = bounds

    def _logits(self, x):
        return (x.reshape(len(x), -1).astype(np.float64) @ self.W.T + self.b).astype(np.float32)

    def _value_and_grad(self, x, objective, knobs):
        z = x.reshape(len(x), -1).astype(np.float64) @ self.W.T + self.b
        v, dz = objective_and_dz(z, objective, knobs)
        return v, (dz @ self.W).reshape(x.shape).astype(np.float32), z.astype(np.float32)


class MLP(Classifier):
    """z = W2 relu(W1 x + b1) + b2."""

    def __init__(self, W1, b1, W2, b2, input_shape, bounds=(0.0, 1.0)):
        super().__init__()
        self.W1, self.b1 = np.asarray(W1, np.float64), np.asarray(b1, np.float64)
        self.W2, self.b2 = np.asarray(W2, np.float64), np.asarray(b2, np.float64)
        self.input_shape = tuple(input_shape)
        self.num_classes = self.W2.shape[0]
        self.bounds = bounds

    def _forward(self, x):
        pre = x.reshape(len(x), -1).astype(np.float64) @ self.W1.T + self.b1
        return pre, np.maximum(pre, 0) @ self.W2.T + self.b2

    def _logits(self, x):
        return self._forward(x)[1].astype(np.float32)

    def _value_and_grad(self, x, objective, knobs):
        pre, z = self._forward(x)
        v, dz = objective_and_dz(z, objective, knobs)
        dh = (dz @ self.W2) * (pre > 0)
        return v, (dh @ self.W1).reshape(x.shape).astype(np.float32), z.astype(np.float32)


def make_mlp(seed=0, d_side=6, hidden=32, classes=5):
    """A random MLP on (1, d_side, d_side) inputs in [0, 1] (output bias centred so that every class
    occurs) and inputs labelled by the model itself."""
    rng = np.random.default_rng(seed)
    d = d_side * d_side
    W1, b1 = rng.normal(0, 1, (hidden, d)) / np.sqrt(d) * 3, rng.normal(0, 0.1, hidden)
    W2 = rng.normal(0, 1, (classes, hidden)) / np.sqrt(hidden) * 3
    probe = rng.uniform(0, 1, (2000, d))
    b2 = -(np.maximum(probe @ W1.T + b1, 0) @ W2.T).mean(axis=0)
    model = MLP(W1, b1, W2, b2, (1, d_side, d_side))
    x = rng.uniform(0.1, 0.9, (40, 1, d_side, d_side)).astype(np.float32)
    y = model.predict(x)
    model.queries = 0
    return model, x, y


def make_linear_binary(seed=0, d=16, n=20):
    """A binary linear classifier and inputs 0.05 to 0.2 (L2) away from its hyperplane, whose
    nearest boundary points lie well inside [0, 1]^d."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 1, (2, d))
    wd = W[0] - W[1]
    b = np.array([-(wd @ np.full(d, 0.5)), 0.0])
    model = LinearSoftmax(W, b, (1, 4, d // 4))
    u = wd / np.linalg.norm(wd)
    base = rng.uniform(0.35, 0.65, (n, d))
    base -= np.outer(base @ u - 0.5 * u.sum(), u)  # onto the hyperplane
    true_dist = rng.uniform(0.05, 0.2, n)
    x = (base + np.outer(true_dist * rng.choice([-1.0, 1.0], n), u)).reshape(n, 1, 4, d // 4).astype(np.float32)
    y = model.predict(x)
    z = x.reshape(n, -1).astype(np.float64) @ W.T + b
    true_dist = np.abs(z[:, 0] - z[:, 1]) / np.linalg.norm(wd)
    model.queries = 0
    return model, x, y, true_dist


def make_linear_multiclass(seed=0, d=16, classes=4, n=30, bounds=(-5.0, 5.0)):
    rng = np.random.default_rng(seed)
    model = LinearSoftmax(rng.normal(0, 1, (classes, d)), rng.normal(0, 0.5, classes), (1, 4, d // 4), bounds)
    x = rng.uniform(-1, 1, (n, 1, 4, d // 4)).astype(np.float32)
    y = model.predict(x)
    model.queries = 0
    return model, x, y



class ToyMLP(Classifier):
    """x (N,1,H,W) -> h = relu(W1 x + b1) -> z = W2 h + b2; compute-layer inputs: x and h."""

    activation_names = ["x", "h"]

    def __init__(self, side=6, hidden=24, classes=4, seed=0, bias=-0.6):
        super().__init__()
        rng = np.random.default_rng(seed)
        d = side * side
        self.input_shape = (1, side, side)
        self.num_classes = classes
        self.W1 = rng.normal(0, 1 / np.sqrt(d), (hidden, d))
        self.b1 = np.full(hidden, bias) + rng.normal(0, 0.1, hidden)
        self.W2 = rng.normal(0, 1.0, (classes, hidden))
        self.b2 = rng.normal(0, 0.1, classes)

    def _fwd(self, x):
        f = x.reshape(len(x), -1).astype(np.float64)
        pre = f @ self.W1.T + self.b1
        h = np.maximum(pre, 0)
        return f, pre, h, h @ self.W2.T + self.b2

    def _logits(self, x):
        return self._fwd(x)[3].astype(np.float32)

    def activations(self, x):
        self.queries += len(x)
        f, _, h, _ = self._fwd(np.asarray(x, np.float32))
        return {"x": f.reshape(x.shape).astype(np.float32), "h": h.astype(np.float32)}

    def _value_and_grad(self, x, objective, knobs):
        f, pre, h, z = self._fwd(x)
        n = len(x)
        mask = (pre > 0).astype(np.float64)
        if objective == "act_l2":
            val = (f * f).sum(1) + (h * h).sum(1)
            gf = 2 * f + (2 * h * mask) @ self.W1
        else:
            t = np.asarray(knobs["target"])
            zs = z - z.max(1, keepdims=True)
            p = np.exp(zs) / np.exp(zs).sum(1, keepdims=True)
            ce = -np.log(p[np.arange(n), t])
            dz = p.copy()
            dz[np.arange(n), t] -= 1
            if objective == "ce":
                val, c = ce, 1.0
                gh = dz @ self.W2
                gf = (gh * mask) @ self.W1
            elif objective == "sparsity":
                w = np.asarray(knobs["weights"], np.float64)
                beta, c = float(knobs["beta"]), float(knobs["c"])
                k = f.shape[1] + h.shape[1]
                tf, th = np.tanh(beta * f), np.tanh(beta * h)
                val = -(w[0] * tf.sum(1) + w[1] * th.sum(1)) / k + c * ce
                gh = -w[1] * beta * (1 - th ** 2) / k + c * (dz @ self.W2)
                gf = -w[0] * beta * (1 - tf ** 2) / k + (gh * mask) @ self.W1
            else:
                raise ValueError(objective)
        return val.astype(np.float32), gf.reshape(x.shape).astype(np.float32), z.astype(np.float32)
