"""onnxruntime sessions over (rewritten) models, and the ONNX-backed :class:`Classifier`.

Data flow: model -> ``preprocess.prepend`` -> ``rewrite.instrument`` -> :class:`Runner` (one
onnxruntime session, batched).  :class:`OnnxClassifier` adds one gradient session per objective
(``grad.add_input_gradient`` over ``objectives.append_objective``): one ``session.run`` per attack
iteration returns the objective, the logits and the input gradient together.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from .errors import AuditorError
from .modelio import graph_inputs, load_model
from .preprocess import Preprocessing, prepend
from .rewrite import Probes, instrument
from .target import BudgetExceeded, Classifier  # noqa: F401 (BudgetExceeded re-exported)


def session_options(threads: int = 0) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return so


class Runner:
    """One onnxruntime CPU session over a model, run in batches."""

    def __init__(self, model: onnx.ModelProto, threads: int = 0, batch_size: int = 64):
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as e:
            raise AuditorError(f"onnxruntime cannot load the model: {str(e).strip().splitlines()[0][:300]}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.input_name = graph_inputs(model)[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        dim0 = self.session.get_inputs()[self.inputs.index(self.input_name)].shape[0]
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self.batch_size = self.fixed_batch or max(int(batch_size), 1)

    def run(self, x: np.ndarray, outputs: list[str] | None = None, feeds: dict | None = None) -> dict[str, np.ndarray]:
        """Outputs (all by default) for a batch ``x``; extra ``feeds`` (knobs) are per sample when
        their first dimension equals len(x), else broadcast to every chunk."""
        names = outputs or self.output_names
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        chunks: dict[str, list] = {k: [] for k in names}
        for s in range(0, max(n, 1), self.batch_size):
            xb = x[s:s + self.batch_size]
            real = len(xb)
            if self.fixed_batch and real < self.fixed_batch:
                xb = np.concatenate([xb, np.repeat(xb[-1:], self.fixed_batch - real, axis=0)])
            feed = {self.input_name: xb}
            for k, v in (feeds or {}).items():
                v = np.asarray(v)
                if v.ndim and v.shape[0] == n and n != 1 or (v.ndim and v.shape[0] == n == 1):
                    vb = v[s:s + self.batch_size]
                    if self.fixed_batch and len(vb) < self.fixed_batch:
                        vb = np.concatenate([vb, np.repeat(vb[-1:], self.fixed_batch - len(vb), axis=0)])
                    feed[k] = vb
                else:
                    feed[k] = v
            res = self.session.run(names, feed)
            for k, r in zip(names, res):
                chunks[k].append(r[:real] if r.ndim and r.shape[0] == len(xb) else r)
        return {k: (np.concatenate(v) if v and v[0].ndim and len(v) > 1 else v[0]) for k, v in chunks.items()}


def _as_model(model) -> onnx.ModelProto:
    if isinstance(model, (str, os.PathLike, Path)):
        return load_model(model)
    return model


class OnnxClassifier(Classifier):
    """A :class:`Classifier` over an ONNX model with preprocessing prepended (raw pixel domain)."""

    def __init__(self, model, preprocessing: Preprocessing | None = None, *, threads: int = 0,
                 batch_size: int = 64, sparsity_f: str = "tanh"):
        super().__init__()
        self.preprocessing = preprocessing or Preprocessing()
        base = _as_model(model)
        self.base_model = base  # the model as deployed, before preprocessing is prepended
        self.model = prepend(base, self.preprocessing)
        self.instrumented, self.probes = instrument(self.model)
        self.threads, self.batch_size, self.sparsity_f = threads, batch_size, sparsity_f
        self.runner = Runner(self.instrumented, threads, batch_size)
        self.logits_name = self.model.graph.output[0].name
        self.bounds = self.preprocessing.bounds
        shape = self.runner.session.get_inputs()[0].shape
        self.input_shape = tuple(int(d) for d in shape[1:])
        self.activation_names = list(self.probes.layer_inputs)
        out_shape = self.runner.session.get_outputs()[0].shape
        self.num_classes = int(out_shape[-1]) if isinstance(out_shape[-1], int) else None
        self._grad_runners: dict[str, tuple[Runner, str, dict]] = {}

    @property
    def layers(self):
        return self.probes.layers

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Logits and every probed tensor (activations and compute-layer inputs) in one run."""
        self._check_deadline()
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.queries += len(x)
        return self.runner.run(x)

    def _logits(self, x):
        self._check_deadline()
        return self.runner.run(x, [self.logits_name])[self.logits_name]

    def activations(self, x):
        out = self.forward(x)
        return {k: out[k] for k in self.activation_names}

    # --- gradients -------------------------------------------------------------------------
    def _objective_spec(self, objective: str):
        from . import objectives as ob

        if objective == "ce":
            return ob.CrossEntropy(target_input="target")
        if objective == "margin":
            return ob.CWMargin(kappa_input="kappa", label_input="label", targeted=False)
        if objective == "logit":
            return ob.Logit(index_input="index")
        if objective == "sparsity":
            return ob.WeightedSum([(1.0, ob.Sparsity(list(self.probes.layer_inputs), f=self.sparsity_f,
                                                     weights_input="weights", beta_input="beta")),
                                   ("c", ob.CrossEntropy(target_input="target"))])
        if objective == "act_l2":
            return ob.ActivationL2(list(self.probes.layer_inputs))
        raise AuditorError(f"unknown objective '{objective}'")

    def _grad_runner(self, objective: str):
        if objective not in self._grad_runners:
            from .grad import add_input_gradient
            from .objectives import append_objective

            m, obj_name, knobs = append_objective(self.model, self._objective_spec(objective), logits=self.logits_name)
            g = add_input_gradient(m, obj_name, grad_name="grad_input")
            self._grad_runners[objective] = (Runner(g, self.threads, self.batch_size), obj_name, knobs)
        return self._grad_runners[objective]

    def _value_and_grad(self, x, objective, knobs):
        self._check_deadline()
        runner, obj_name, knob_specs = self._grad_runner(objective)
        feeds = {}
        for name, shape in knob_specs.items():
            if name not in knobs:
                raise AuditorError(f"objective '{objective}' needs knob '{name}'")
            v = np.asarray(knobs[name])
            # labels and indices are int64 knobs; every other knob has the logits' type (float32)
            feeds[name] = v.astype(np.int64) if np.issubdtype(v.dtype, np.integer) else v.astype(np.float32)
        out = runner.run(x, [obj_name, "grad_input", self.logits_name], feeds=feeds)
        return out[obj_name], out["grad_input"], out[self.logits_name]
