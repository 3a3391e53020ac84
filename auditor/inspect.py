"""``auditor inspect``: the layer table of a model, its compute layers and differentiability."""

from __future__ import annotations

from .graph import layer_table
from .modelio import default_opset, input_shape, load_model, model_hash


def inspect_model(path) -> dict:
    model = load_model(path)
    rows = layer_table(model)
    try:
        from .grad import differentiability

        blocking = [{"node": n, "op": o, "reason": r} for n, o, r in differentiability(model)]
    except ImportError:  # pragma: no cover - the grad package is part of the project
        blocking = None
    block_nodes = {b["node"] for b in blocking or []}
    return {
        "model": str(path), "sha256": model_hash(model), "opset": default_opset(model),
        "input": {"name": model.graph.input[0].name, "shape": input_shape(model)},
        "outputs": [o.name for o in model.graph.output],
        "layers": [{"name": r.name, "op": r.op_type, "inputs": [[n, s] for n, s in r.inputs],
                    "outputs": [[n, s] for n, s in r.outputs], "macs": r.macs, "role": r.role,
                    "feeds_from": r.feeds_from, "supported": True,
                    "differentiable": r.name not in block_nodes} for r in rows],
        "total_macs": sum(r.macs for r in rows),
        "differentiable": None if blocking is None else not blocking,
        "blocking_ops": blocking or [],
    }


def _shape(s) -> str:
    return "?" if s is None else "x".join(str(d) for d in s)


def render_inspect(info: dict) -> str:
    L = [f"model  {info['model']}  (opset {info['opset']}, sha256 {info['sha256'][:12]})",
         f"input  {info['input']['name']} {_shape(info['input']['shape'])}   outputs {', '.join(info['outputs'])}", ""]
    L.append(f"{'#':>3} {'op':14s} {'output shape':18s} {'MACs':>10s}  role / fed by")
    for i, r in enumerate(info["layers"]):
        out = _shape(r["outputs"][0][1]) if r["outputs"] else ""
        role = r["role"]
        if r["role"] == "compute":
            role += f" <- {r['feeds_from'] or '(no activation: dense input)'}"
        if not r["differentiable"]:
            role += "  [no gradient rule]"
        L.append(f"{i:>3} {r['op'][:14]:14s} {out[:18]:18s} {r['macs']:>10,d}  {role}"[:200])
        L.append(f"    {r['name']}")
    L.append("")
    L.append(f"total MACs per input: {info['total_macs']:,d}")
    if info["differentiable"] is None:
        L.append("differentiable: unknown")
    elif info["differentiable"]:
        L.append("differentiable: yes (input gradients available for white-box attacks)")
    else:
        ops = ", ".join(f"{b['op']} ({b['node']})" for b in info["blocking_ops"])
        L.append(f"differentiable: no — blocked by {ops}")
    return "\n".join(L) + "\n"
