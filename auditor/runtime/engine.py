"""The one place onnxruntime sessions are built and run.

:func:`make_session` builds every ``InferenceSession`` of the tool with the options of
:func:`session_options` (threads, graph optimisation, spinning, logging, CPU provider) and turns
a refusal into an :class:`AuditorError`; ``shared`` gives the large weights of several sessions of
one model as external initializers from one proto instead of serialising them into each
(:class:`SharedWeights`).

:class:`Runner` runs a session over a batch of inputs: in chunks of at most ``batch_size`` inputs
(fewer when their tensors would exceed the memory budget), padded to the model's fixed batch size
when it has one, with extra feeds (an objective's knobs) cast and shaped after the graph's declared
input types: an int32 label array, a Python float or a 0-d array all feed an int64 (N,) label or a
float32 scalar knob.  :func:`run_batches` is the same chunking and padding for any callable (the
approximate-multiplier execution uses it).

This module depends on onnx, onnxruntime and numpy only, so that every layer of the package (model
loading, rewrites, cost models, attacks) builds its sessions here.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from ..errors import AuditorError

ort.set_default_logger_severity(3)  # onnxruntime warnings never reach stderr beside an error line

#: bytes of tensors one onnxruntime run may compute: a :class:`Runner` runs at most as many inputs
#: together as fit in it (and never more than its batch_size), so that memory is bounded by the
#: batch, not by the data, on ImageNet-sized models as on digits
MEMORY_BUDGET = 384 * 2**20

#: numpy dtypes of onnxruntime's input type strings
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
              "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
              "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


#: a session of a model with a float weight at least this large does not prepack its weights:
#: onnxruntime builds the packed copy of a Gemm/MatMul weight beside the copy it packs, so the
#: build holds that weight three times with ours (measured on vgg11_bn, whose first FC weight is
#: 392 MiB: build peak 2.05 -> 1.66 GB, same steady size, forward time 0.995x).  Models with no
#: such weight (every bundled model, resnet, mobilenet, efficientnet) are built as before.
PREPACK_MAX_BYTES = 64 * 2**20


def huge_model(model: onnx.ModelProto) -> bool:
    """Whether ``model`` has a float weight (with or without its data) of at least
    :data:`PREPACK_MAX_BYTES` (VGG-sized): its sessions do not prepack, and the command line
    returns its freed tensors to the system (:func:`return_freed_memory`)."""
    return any(t.data_type == onnx.TensorProto.FLOAT and self_bytes(t) >= PREPACK_MAX_BYTES
               for t in model.graph.initializer)


def session_options(threads: int | None = 0, *, optimize: bool = True, spin: bool = True,
                    log_severity: int = 3, prepack: bool = True) -> ort.SessionOptions:
    """The session options of every session of the tool.

    ``threads``: onnxruntime's intra-op threads (0 = its default, None = leave its defaults
    alone); one inter-op thread, sequential execution.  ``optimize`` False disables graph
    optimisations (constant folding of a sub-graph, probing one op: the graph must run as
    written).  ``spin`` False stops idle workers from spinning (sessions run between numba
    kernels).  ``prepack`` False keeps weights as they are (see :data:`PREPACK_MAX_BYTES`).
    Tensors are freed after every run (no memory arena)."""
    so = ort.SessionOptions()
    if threads is not None:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # no per-session memory arena: an arena keeps the peak of its session's tensors reserved for
    # the session's lifetime, so the forward, gradient and verifier sessions of an audit held the
    # sum of their peaks (measured: resnet18 at 224, forward + sparsity gradient, 1.14 -> 0.92 GB)
    so.enable_cpu_mem_arena = False
    if not prepack:
        so.add_session_config_entry("session.disable_prepacking", "1")
    so.log_severity_level = log_severity
    return so


#: freed blocks of at least this many bytes go back to the system at once (see return_freed_memory)
MMAP_THRESHOLD_BYTES = 1 << 20


def return_freed_memory(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Make this process's allocator give blocks of at least ``threshold`` bytes back to the
    system when they are freed (glibc's ``M_MMAP_THRESHOLD``; False, and nothing done, without
    glibc).  glibc maps large blocks on their own and unmaps them when freed, but raises that
    threshold to the largest block freed so far (up to 32 MiB): after the first onnxruntime runs,
    the tensors of a large model's runs (no memory arena: :func:`session_options`) came from the
    heap, which keeps freed memory.  A fixed threshold stops that: the clean audit of 32 inputs of
    torchvision's vgg11_bn at 224 peaked at 1.63 GB instead of 1.91 GB (median resident size over
    its clean stage 1.38 instead of 1.57 GB); vgg11_bn's forward and gradient run times within the
    noise (2.02 vs 2.00 s per forward of 6 inputs, 1.59 vs 1.56 s per gradient of 2, medians of 5
    interleaved, load 4).  But every tensor of a MiB or more is then mapped and faulted in afresh
    at each run: on models of a few MiB of activations per run that is a cost, not a saving
    (resnet18 at 224, gradient of a batch of 2: cross-entropy 0.159-0.177 -> 0.192-0.205 s,
    sparsity 0.186-0.219 -> 0.232-0.249 s, medians of 8 in fresh processes, load 0.8; the
    white-box attack of benchmarks/bench_e2e.py took 231 / 220 s per profile with the threshold
    fixed, 185 / 182 s without).  So it is done only for :func:`huge_model` models: by
    the command line's audit once the model is loaded (``run_audit(return_memory=True)``) and
    then in its pool and Ray workers, and by ``auditor inspect``, which runs no model; the
    library itself leaves the allocator alone."""
    try:
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no C library to ask, or not glibc's
        return False
    return bool(mallopt(-3, int(threshold)))  # M_MMAP_THRESHOLD


def ort_message(e: Exception) -> str:
    """The informative part of an onnxruntime error (its node and status message), one line."""
    text = " ".join(str(e).split())
    for marker in ("Non-zero status code returned while running ", "FAIL : "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text[:300]


class SharedWeights:
    """The large float initializers of a model, given to every session built from the model or a
    rewrite of it (instrumented, gradient graphs, or :meth:`light`, a copy without their data)
    through the session options instead of in the serialized model.

    Two ways.  Copied (``add_external_initializers``): onnxruntime copies them into the session it
    builds (the buffers may be freed once it is built), so they are made from ``model`` (held, read
    only) for each build and dropped after it.  In place (``add_initializer``): the session reads
    our buffer itself, so one copy serves every session.  onnxruntime's graph optimisations read
    and rewrite some weights (Conv's are fused and reordered to its blocked layout), which a
    weight in place cannot be; so in place are only the weights of at least
    :data:`IN_PLACE_MIN_BYTES` that no op but Gemm and MatMul reads, in sessions that do not
    prepack (:data:`PREPACK_MAX_BYTES`: a prepacking session copies them anyway), one numpy copy
    each kept for as long as this object lives.  A build an optimisation still refuses so (it
    finds no data: the weight's entry points to a folder) is built again with every weight copied.
    Measured on vgg11_bn (0.5 GB of weights): a session from the serialized model grows the process
    by 1.1 GB, from copied weights by 0.59 GB.  On torchvision's export (472 MiB of its weights are
    its classifier's Gemm weights) with those in place, a second forward session (the verifier's)
    grows it by 0.05 GB instead of 0.52 GB and the cross-entropy gradient session by 0.24 GB
    instead of 0.72 GB (loading, both forward sessions and a gradient run: peak 1.91 GB instead of
    3.33 GB; logits and gradients bit-identical).  ``strip(model)`` is the model without those
    initializers' data (their graph entries kept) and the values to add."""

    #: initializers at least this large are shared (smaller ones are not worth the bookkeeping)
    MIN_BYTES = 4096
    #: shared weights at least this large that only Gemm/MatMul read are given in place (see above)
    IN_PLACE_MIN_BYTES = 1 << 20

    def __init__(self, model: onnx.ModelProto):
        self.source = model
        self._in_place: dict[str, ort.OrtValue] = {}  # built on first use, read by the sessions
        self._tensors = {t.name: t for t in model.graph.initializer
                         if t.data_location != onnx.TensorProto.EXTERNAL and t.data_type == onnx.TensorProto.FLOAT
                         and self_bytes(t) >= self.MIN_BYTES}

    def shared_in(self, model: onnx.ModelProto) -> list[str]:
        """The shared initializers ``model`` has, unchanged (same name, shape and type; with or
        without their data, as in :meth:`light`)."""
        out = []
        for t in model.graph.initializer:
            mine = self._tensors.get(t.name)
            if mine is not None and list(t.dims) == list(mine.dims) and t.data_type == onnx.TensorProto.FLOAT:
                out.append(t.name)
        return out

    def light(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """``model`` without the shared initializers' data (a session built with these shared
        weights is given them); the big tensors are not copied."""
        names = set(self.shared_in(model))
        return _without_initializers(model, names) if names else model

    def in_place(self, model: onnx.ModelProto) -> list[str]:
        """The shared initializers of ``model`` that its sessions may read in place: at least
        :data:`IN_PLACE_MIN_BYTES`, read by Gemm and MatMul nodes only (not a graph output)."""
        readers: dict[str, set] = {}
        for n in model.graph.node:
            for i in n.input:
                readers.setdefault(i, set()).add(n.op_type)
        outputs = {o.name for o in model.graph.output}
        return [k for k in self.shared_in(model)
                if self_bytes(self._tensors[k]) >= self.IN_PLACE_MIN_BYTES and k not in outputs
                and readers.get(k) and readers[k] <= _IN_PLACE_OPS]

    def values(self, names) -> dict[str, ort.OrtValue]:
        """OrtValues over the shared initializers ``names`` (over a copy of their bytes: protobuf
        hands its bytes out as a copy), for one session build."""
        return {k: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(numpy_helper.to_array(self._tensors[k])))
                for k in names}

    def kept(self, names) -> dict[str, ort.OrtValue]:
        """OrtValues over the shared initializers ``names`` that sessions read in place: one copy
        of each, made on first use and kept (the sessions given them read it)."""
        for k in names:
            if k not in self._in_place:
                self._in_place.update(self.values([k]))
        return {k: self._in_place[k] for k in names}

    def strip(self, model: onnx.ModelProto, in_place: bool = False
              ) -> tuple[bytes, dict[str, ort.OrtValue], dict[str, ort.OrtValue]]:
        """(serialized ``model`` without the shared initializers, the OrtValues to copy into the
        session, those it reads in place: :meth:`in_place`'s when ``in_place``, else none)."""
        names = self.shared_in(model)
        if not names:
            return model.SerializeToString(), {}, {}
        here = set(self.in_place(model)) if in_place else set()
        light = _without_initializers(model, set(names), here)
        return (light.SerializeToString(), self.values([k for k in names if k not in here]),
                self.kept([k for k in names if k in here]))


#: the ops whose weight operand onnxruntime's graph optimisations leave as it is (no fusion reads
#: it, no layout transform rewrites it); without prepacking their kernels read it where it is
_IN_PLACE_OPS = frozenset({"Gemm", "MatMul"})


def _without_initializers(model: onnx.ModelProto, names: set[str], in_place: frozenset | set = frozenset()
                          ) -> onnx.ModelProto:
    """``model`` whose initializers in ``names`` are marked as external data without their bytes
    (onnxruntime takes them from the session options), rebuilt without copying the others' data
    (protobuf copies what it is given: the big ones are never given).  Those in ``in_place`` point
    to the working folder, which exists (onnxruntime checks that for a weight given in place; it
    never reads it: an optimisation that tries fails, see :class:`SharedWeights`)."""
    g = model.graph
    inits = []
    for t in g.initializer:
        if t.name in names:
            e = onnx.TensorProto(name=t.name, data_type=t.data_type, dims=list(t.dims))
            e.data_location = onnx.TensorProto.EXTERNAL
            where = "." if t.name in in_place else _SHARED_LOCATION
            for key, value in (("location", where), ("offset", "0"), ("length", str(self_bytes(t)))):
                entry = e.external_data.add()
                entry.key, entry.value = key, value
            t = e
        inits.append(t)
    graph = onnx.helper.make_graph(list(g.node), g.name, list(g.input), list(g.output), inits,
                                   doc_string=g.doc_string, value_info=list(g.value_info),
                                   sparse_initializer=list(g.sparse_initializer))
    out = onnx.ModelProto()
    out.ir_version = max(model.ir_version, 4)
    out.producer_name, out.producer_version, out.domain = model.producer_name, model.producer_version, model.domain
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.metadata_props.extend(model.metadata_props)
    out.graph.CopyFrom(graph)
    return out


#: the (never read) external-data file name of shared initializers
_SHARED_LOCATION = "auditor-shared-weights.bin"


def self_bytes(t: onnx.TensorProto) -> int:
    return int(np.prod(t.dims, dtype=np.int64)) * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize


def make_session(model: onnx.ModelProto | str | bytes, threads: int | None = 0, *, optimize: bool = True,
                 spin: bool = True, providers=("CPUExecutionProvider",), shared: SharedWeights | None = None,
                 log_severity: int = 3, what: str = "the model") -> ort.InferenceSession:
    """An onnxruntime session over ``model`` (proto, serialized bytes or path) with the tool's
    options (:func:`session_options`); ``shared``: the model's large weights given from their
    proto, copied or read in place (:class:`SharedWeights`; ``model`` may lack their data).  A
    model onnxruntime refuses is bad input: :class:`AuditorError` naming ``what``."""
    prepack = not isinstance(model, onnx.ModelProto) or not huge_model(model)

    def build(in_place: bool):
        so = session_options(threads, optimize=optimize, spin=spin, log_severity=log_severity, prepack=prepack)
        src, kept = model, {}
        if isinstance(model, onnx.ModelProto):
            if shared is not None:
                src, values, kept = shared.strip(model, in_place=in_place)
                if values:
                    so.add_external_initializers(list(values), list(values.values()))
                for name, value in kept.items():
                    so.add_initializer(name, value)
            else:
                src = model.SerializeToString()
        elif not isinstance(model, bytes):
            src = str(model)
        sess = ort.InferenceSession(src, so, providers=list(providers))
        sess._auditor_in_place = kept  # the buffers it reads (SharedWeights keeps them too)
        return sess

    in_place = shared is not None and not prepack and isinstance(model, onnx.ModelProto)
    try:
        try:
            return build(in_place)
        except Exception:  # noqa: BLE001 - an optimisation read a weight given in place: copy them all
            if not in_place or not shared.in_place(model):
                raise
            return build(False)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise AuditorError(f"onnxruntime cannot load {what}: {str(e).strip().splitlines()[0][:300]}") from None


def tensor_bytes(model: onnx.ModelProto) -> int:
    """Bytes per input of the tensors a model computes: every value_info/output with a known
    element type and static dimensions after the batch axis (a lower bound when shapes are
    missing; backward tensors of a gradient graph mirror forward ones and are not counted)."""
    total = 0
    g = model.graph
    for vi in list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        if not tt.elem_type or not tt.HasField("shape") or len(tt.shape.dim) < 1:
            continue
        n = 1
        for d in tt.shape.dim[1:]:
            if not d.HasField("dim_value"):
                n = 0
                break
            n *= d.dim_value
        if n:
            total += n * np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
    return total


def pad_batch(a: np.ndarray, size: int) -> np.ndarray:
    """``a`` (batch first) padded to ``size`` rows by repeating its last row."""
    if len(a) >= size:
        return a
    return np.concatenate([a, np.repeat(a[-1:], size - len(a), axis=0)])


def run_batches(run: Callable[[np.ndarray, dict], dict], x: np.ndarray, step: int, *, fixed_batch: int | None = None,
                feeds: dict | None = None, per_sample: Callable[[str], bool] = lambda k: False,
                check: Callable[[float], None] | None = None, rate: list | None = None,
                reduce: Callable[[dict, slice], dict] | None = None) -> dict[str, np.ndarray]:
    """``run(chunk, feeds)`` over ``x`` in chunks of ``step`` inputs (padded to ``fixed_batch``
    when given), the results concatenated (the padding dropped).  ``feeds`` whose name
    ``per_sample`` accepts are sliced (and padded) with the chunk, the others given whole.
    ``check(seconds)`` is called before every chunk with its estimated time; ``rate``, a
    one-element list, carries the seconds per input seen lately (the estimate) between calls.
    ``reduce(results, rows)``, when given, turns each chunk's results (rows ``rows`` of ``x``)
    into what is kept of them, so that large outputs live one chunk at a time."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = len(x)
    step = fixed_batch or max(int(step), 1)
    rate = rate if rate is not None else [0.0]
    chunks: dict[str, list] = {}
    for s in range(0, max(n, 1), step):
        xb = x[s:s + step]
        real = len(xb)
        if check is not None:
            check(rate[0] * real)
        t0 = time.monotonic()
        if fixed_batch:
            xb = pad_batch(xb, fixed_batch)
        feed = {}
        for k, v in (feeds or {}).items():
            if per_sample(k):
                vb = v[s:s + step]
                feed[k] = pad_batch(vb, len(xb)) if fixed_batch else vb
            else:
                feed[k] = v
        res = run(xb, feed)
        # the slowest rate seen lately: the estimate of the next chunk's time
        rate[0] = max((time.monotonic() - t0) / max(len(xb), 1), 0.5 * rate[0])
        res = {k: (r[:real] if getattr(r, "ndim", 0) and r.shape[0] == len(xb) else r) for k, r in res.items()}
        if reduce is not None:
            res = reduce(res, slice(s, s + real))
        for k, r in res.items():
            chunks.setdefault(k, []).append(r)
    return {k: (np.concatenate(v) if len(v) > 1 and v[0].ndim else v[0]) for k, v in chunks.items()}


class Runner:
    """One onnxruntime CPU session over a model, run in batches of at most ``batch_size`` inputs,
    fewer when their tensors (``tensor_bytes`` x ``factor`` per input) would exceed ``budget``
    bytes (``batch_note`` says which).  ``shared``: the weights given from their proto (``model``
    may lack their data, :meth:`SharedWeights.light`); ``spin``: see :func:`session_options`."""

    def __init__(self, model: onnx.ModelProto, threads: int = 0, batch_size: int = 64,
                 budget: int | None = MEMORY_BUDGET, factor: float = 1.0, *, shared: SharedWeights | None = None,
                 providers=("CPUExecutionProvider",), spin: bool = True):
        t0 = time.monotonic()
        self.session = make_session(model, threads, shared=shared, providers=providers, spin=spin)
        self.build_seconds = time.monotonic() - t0  # how long onnxruntime took to build the session
        ins = self.session.get_inputs()
        self.inputs = [i.name for i in ins]
        inits = {t.name for t in model.graph.initializer}
        self.input_name = next(i.name for i in model.graph.input if i.name not in inits)
        self.output_names = [o.name for o in self.session.get_outputs()]
        #: declared dtype and shape of every graph input (the feeds are cast and shaped to them)
        self.input_types = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in ins}
        self.input_shapes = {i.name: list(i.shape) for i in ins}
        dim0 = self.input_shapes[self.input_name][0] if self.input_shapes[self.input_name] else None
        self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
        self.requested_batch = max(int(batch_size), 1)
        self.input_bytes = int(tensor_bytes(model) * factor)
        fit = self.requested_batch if not budget or not self.input_bytes else max(1, int(budget // self.input_bytes))
        self.batch_size = self.fixed_batch or min(self.requested_batch, fit)
        if self.fixed_batch:
            self.batch_note = f"{self.fixed_batch} (the model's fixed batch size)"
        elif self.batch_size < self.requested_batch:
            self.batch_note = (f"{self.batch_size} (batch_size {self.requested_batch} lowered so that one run's tensors, "
                               f"{self.input_bytes / 2**20:.1f} MiB per input, stay within {budget / 2**20:.0f} MiB)")
        else:
            self.batch_note = f"{self.batch_size} (the scenario's batch_size)"
        self._rate = [0.0]

    @property
    def seconds_per_sample(self) -> float:
        """The slowest rate (seconds per input) seen lately: the estimate of the next chunk's time."""
        return self._rate[0]

    def _per_sample(self, name: str) -> bool:
        shape = self.input_shapes.get(name) or []
        return bool(shape) and not isinstance(shape[0], int)

    def typed(self, feeds: dict | None, n: int) -> dict[str, np.ndarray]:
        """``feeds`` cast to their graph inputs' types and shaped like them: a scalar or a
        one-element array for a scalar input, a scalar broadcast to the ``n`` inputs of a
        per-sample (batch-first) input.  A feed the graph does not take is bad input."""
        out = {}
        for k, v in (feeds or {}).items():
            if k not in self.input_types:
                raise AuditorError(f"the model has no input {k!r} to feed")
            a = np.asarray(v)
            if not np.can_cast(a.dtype, self.input_types[k], "same_kind") and a.dtype.kind not in "iub":
                if not (a.dtype.kind == "f" and np.issubdtype(self.input_types[k], np.integer)
                        and np.array_equal(a, np.round(a))):
                    raise AuditorError(f"input {k!r} takes {np.dtype(self.input_types[k]).name}, got {a.dtype.name}")
            a = a.astype(self.input_types[k], copy=False)
            shape = self.input_shapes[k]
            if not shape and a.size == 1:
                a = a.reshape(())
            elif self._per_sample(k) and a.ndim == len(shape) - 1:
                a = np.broadcast_to(a, (n,) + a.shape)
            out[k] = np.ascontiguousarray(a)
        return out

    def run(self, x: np.ndarray, outputs: list[str] | None = None, feeds: dict | None = None,
            check=None, reduce=None) -> dict[str, np.ndarray]:
        """Outputs (all by default) for a batch ``x``; extra ``feeds`` (knobs) are cast to the
        graph's input types; those with a batch (symbolic first) dimension are per sample, the
        others given to every chunk.  ``check(seconds)`` is called before every chunk with the
        estimated time of that chunk (the time budget); ``reduce``: see :func:`run_batches`."""
        names = outputs or self.output_names
        x = np.ascontiguousarray(x, dtype=np.float32)

        def one(xb, feed):
            try:
                res = self.session.run(names, {self.input_name: xb, **feed})
            except ort.capi.onnxruntime_pybind11_state.Fail as e:  # the model's own ops refuse the data
                raise AuditorError(f"onnxruntime cannot run the model: {ort_message(e)}") from None
            return dict(zip(names, res))

        return run_batches(one, x, self.batch_size, fixed_batch=self.fixed_batch, feeds=self.typed(feeds, len(x)),
                           per_sample=self._per_sample, check=check, rate=self._rate, reduce=reduce)
