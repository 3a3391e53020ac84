"""``auditor inspect``: the layer table of a model, its compute layers and differentiability.

The text form fits 80 columns without cutting anything: op names and shapes are printed in full
(the batch dimension, whatever the model calls it, is shown as ``N``), and the column widths
follow the model; node and tensor names, reasons and notes too long for a line wrap onto
indented continuation lines.
"""

from __future__ import annotations

import textwrap
from collections import Counter

import onnx

from ..grad import differentiability
from .graph import COMPUTE_OPS, layer_table, skipped_compute_nodes
from .load import default_opset, input_shape, load_model, load_notes, model_hash

WIDTH = 80


def _label(text: str) -> str:
    """A summary line's label, padded to the column where its text starts."""
    return f"{text:<10s}"


def inspect_model(path, input_size=None, layout: str = "NCHW") -> dict:
    """The layer table of the model at ``path`` (or of a model :func:`auditor.model.load.load_model`
    returned); ``input_size`` ([H, W]) fixes dynamic spatial dimensions as a scenario's
    ``preprocessing.input_size`` does."""
    if isinstance(path, onnx.ModelProto):
        model, path = path, "<in-memory model>"
    else:
        model = load_model(path, input_size=input_size, layout=layout)
    rows = layer_table(model)
    blocking = [{"node": n, "op": o, "reason": r} for n, o, r in differentiability(model)]
    block_nodes = {b["node"] for b in blocking}
    skipped = [{"node": n, "op": o, "reason": r} for n, o, r in skipped_compute_nodes(model)]
    n_compute = sum(r.role == "compute" for r in rows)
    return {
        "model": str(path), "sha256": model_hash(model), "opset": default_opset(model),
        "input": {"name": model.graph.input[0].name, "shape": input_shape(model)},
        "outputs": [o.name for o in model.graph.output],
        "output_shapes": {r[0]: r[1] for row in rows for r in row.outputs
                          if r[0] in {o.name for o in model.graph.output}},
        "layers": [{"name": r.name, "op": r.op_type, "inputs": [[n, s] for n, s in r.inputs],
                    "outputs": [[n, s] for n, s in r.outputs], "macs": r.macs, "role": r.role,
                    "feeds_from": r.feeds_from, "data_input": r.data_input, "supported": True,
                    "differentiable": r.name not in block_nodes} for r in rows],
        "compute_layers": n_compute,
        "total_macs": sum(r.macs for r in rows),
        "not_compute_layers": skipped,
        "no_compute_reason": None if n_compute else _no_compute_reason(skipped),
        "differentiable": not blocking,
        "blocking_ops": blocking,
        "load_notes": load_notes(model),
    }


def _no_compute_reason(skipped: list[dict]) -> str:
    if not skipped:
        return f"the graph has no {', '.join(COMPUTE_OPS[:-1])} or {COMPUTE_OPS[-1]} node"
    ops = Counter(s["op"] for s in skipped)
    what = ", ".join(f"{k} x{v}" for k, v in ops.items())
    first = skipped[0]
    return (f"{len(skipped)} Conv/Gemm/MatMul node(s) ({what}) have no constant weight "
            f"(e.g. {first['op']} '{first['node']}': {first['reason']})")


def shape_text(s) -> str:
    """``N x C x H x W`` as ``Nx16x28x28``: the batch dimension (symbolic or not) as N."""
    if s is None:
        return "?"
    if not s:
        return "scalar"
    dims = ["N" if i == 0 and not isinstance(d, int) else str(d) for i, d in enumerate(s)]
    return "x".join(dims)


def _wrap(text: str, first: str, rest: str | None = None) -> list[str]:
    """``text`` after the prefix ``first`` over lines of at most WIDTH columns (continuation
    lines indented like ``rest``); long names are broken, never cut."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=rest if rest is not None
                         else " " * len(first), break_long_words=True, break_on_hyphens=False) or [first.rstrip()]


def render_inspect(info: dict) -> str:
    L: list[str] = []
    L += _wrap(info["model"], _label("model"))
    L += _wrap(f"opset {info['opset']}, sha256 {info['sha256'][:12]}", _label(""))
    L += _wrap(f"{info['input']['name']} {shape_text(info['input']['shape'])}", _label("input"))
    outs = info.get("output_shapes", {})
    L += _wrap(", ".join(f"{o} {shape_text(outs[o])}" if o in outs else o for o in info["outputs"]), _label("outputs"))
    L.append("shapes include the batch dimension (N where it is dynamic)")
    L.append("")
    layers = info["layers"]
    idx_w = max(len(str(max(len(layers) - 1, 0))), 1)
    shapes = [shape_text(r["outputs"][0][1]) if r["outputs"] else "" for r in layers]
    macs = [f"{r['macs']:,d}" if r["macs"] else "" for r in layers]
    op_w = max([len("op")] + [len(r["op"]) for r in layers])
    mac_w = max([len("MACs")] + [len(m) for m in macs])
    role_w = len("activation")
    # the shape column takes what is left; a longer shape goes on a line of its own
    sh_w = max(len("output"), min(max([0] + [len(s) for s in shapes]),
                                  WIDTH - (idx_w + 2 + op_w + 2 + 2 + mac_w + 2 + role_w)))
    indent = " " * (idx_w + 2)
    L.append(f"{'#':>{idx_w}}  {'op':<{op_w}}  {'output':<{sh_w}}  {'MACs':>{mac_w}}  role")
    for i, (r, shp, mac) in enumerate(zip(layers, shapes, macs)):
        long_shape = len(shp) > sh_w
        L.append(f"{i:>{idx_w}}  {r['op']:<{op_w}}  {('(below)' if long_shape else shp):<{sh_w}}  "
                 f"{mac:>{mac_w}}  {r['role']}".rstrip())
        L += _wrap(r["name"], indent + "node ")
        if long_shape:
            L += _wrap(shp, indent + "output ")
        if r["role"] == "compute":
            fed = r["feeds_from"]
            if fed is not None and fed == info["input"]["name"]:
                fed += " (the model input)"
            L += _wrap(fed or "no activation (dense input)", indent + "fed by ")
            sharing = [o["name"] for o in layers if o is not r and o["role"] == "compute"
                       and o.get("data_input") is not None and o.get("data_input") == r.get("data_input")]
            if sharing:  # each layer skips the shared input's zeros (one W_l per layer)
                L += _wrap(", ".join(sharing), indent + "same input as ")
        if not r["differentiable"]:
            L += _wrap("blocks the input gradient (see below)", indent)
    L.append("")
    L += [ln for note in info.get("load_notes", []) for ln in _wrap(note, _label("note"))]
    L += _summary(info)
    return "\n".join(L) + "\n"


def _summary(info: dict) -> list[str]:
    L: list[str] = []
    n = info.get("compute_layers", sum(r["role"] == "compute" for r in info["layers"]))
    if n:
        L += _wrap(f"{n} compute layer(s), {info['total_macs']:,d} MACs per input", _label("compute"))
        for s in info.get("not_compute_layers", []):
            L += _wrap(f"{s['op']} '{s['node']}' is not costed: {s['reason']}", _label(""))
    else:
        L += _wrap(f"no compute layer found: {info.get('no_compute_reason') or 'none recognised'}; "
                   "the cost models and the sparsity attacks need layers with constant weights", _label("compute"))
    if info["differentiable"] is None:
        L.append(_label("gradients") + "unknown")
    elif info["differentiable"]:
        if n:
            L += _wrap("differentiable (input gradients available for white-box attacks)", _label("gradients"))
        else:
            L += _wrap("differentiable for evasion attacks only: with no compute layer there is "
                       "no sparsity objective", _label("gradients"))
    else:
        blocking = info["blocking_ops"]
        ops = Counter(b["op"] for b in blocking)
        L += _wrap("not differentiable; blocked by: " + ", ".join(
            f"{op} ({k} node{'s' if k > 1 else ''})" for op, k in ops.items()), _label("gradients"))
        for b in blocking:
            L += _wrap(f"{b['op']} '{b['node']}': {b['reason']}", _label(""))
    return L
