"""Gradient rules of the matrix products (Gemm, MatMul, Einsum), with respect to every operand
that needs one."""

from __future__ import annotations

from .builder import GraphBuilder, NotDifferentiable
from .registry import GradNode, rule


@rule("Gemm")
def _gemm(b: GraphBuilder, n: GradNode):
    a, w, y = n.x(0), n.x(1), n.y()
    alpha = float(n.attr("alpha", 1.0))
    beta = float(n.attr("beta", 1.0))
    ta, tb = int(n.attr("transA", 0)), int(n.attr("transB", 0))
    dy = n.dy
    da = dw = dc = None
    al = alpha if alpha != 1.0 else None
    if n.need(0):
        if not ta:  # dA = alpha * dY @ op(B)^T
            da = b.op("Gemm", [dy, w], transB=1 - tb, alpha=al)
        else:  # dA = alpha * op(B) @ dY^T
            da = b.op("Gemm", [w, dy], transA=tb, transB=1, alpha=al)
    if n.need(1):
        if not tb:  # dB = alpha * op(A)^T @ dY
            dw = b.op("Gemm", [a, dy], transA=1 - ta, alpha=al)
        else:  # dB = alpha * dY^T @ op(A)
            dw = b.op("Gemm", [dy, a], transA=1, transB=ta, alpha=al)
    if n.need(2):
        g = dy if beta == 1.0 else b.op("Mul", [dy, b.scalar(beta, y)])
        dc = b.reduce_to(g, y, n.x(2))
    return [da, dw, dc]


def _swap_last(b: GraphBuilder, x: str, rank: int) -> str:
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    return b.op("Transpose", [x], perm=perm)


@rule("MatMul")
def _matmul(b: GraphBuilder, n: GradNode):
    a, c, y = n.x(0), n.x(1), n.y()
    ra, rc, _ = b.rank(a), b.rank(c), b.rank(y)
    sa, sc, sy = b.static_shape(a), b.static_shape(c), b.static_shape(y)
    # Promote 1-D operands to matrices the way MatMul does: A (k,) -> (1, k), C (k,) -> (k, 1);
    # dY gets the matching unit dimension(s) back.
    a2, c2, dy2 = a, c, n.dy
    sa2, sc2, sy2 = sa, sc, sy
    if ra == 1:
        a2 = b.unsqueeze(a, [0])
        sa2 = (1,) + tuple(sa)
        dy2 = b.unsqueeze(dy2, [-2] if rc > 1 else [0])
        sy2 = sy[:-1] + (1, sy[-1]) if rc > 1 else (1,)
    if rc == 1:
        c2 = b.unsqueeze(c, [1])
        sc2 = tuple(sc) + (1,)
        dy2 = b.unsqueeze(dy2, [-1])
        sy2 = tuple(sy2) + (1,)
    for name, shp in ((a2, sa2), (c2, sc2), (dy2, sy2)):
        b.shapes[name] = shp
    da = dc = None
    if n.need(0):  # dA = dY @ C^T, summed over broadcast batch dims
        if b.is_const(c) and rc == 2 and ra >= 2 and isinstance(sc[1], int):
            # a weight: Gemm(dY as rows, C, transB) reads C as it is, the same product as dY @ C^T
            # (a transposed copy beside the weight, in the graph or folded by onnxruntime from a
            # Transpose: convnext_tiny at 224 has 36 of them, 99 MiB, 0.6 s of its graph build)
            rows = dy2 if len(sy2) == 2 else b.op("Reshape", [dy2, b.ints([-1, sc[1]])])
            g = b.op("Gemm", [rows, c], transB=1)
            da = g if len(sy2) == 2 else b.reshape_like(g, a)
        else:
            g = b.op("MatMul", [dy2, _swap_last(b, c2, len(sc2))])
            b.shapes[g] = tuple(sy2[:-1]) + (sa2[-1],)
            g = b.reduce_to(g, g, a2)
            da = b.reshape_like(g, a) if ra == 1 else g
    if n.need(1):  # dC = A^T @ dY, summed over broadcast batch dims
        g = b.op("MatMul", [_swap_last(b, a2, len(sa2)), dy2])
        b.shapes[g] = tuple(sy2[:-2]) + (sc2[-2], sy2[-1])
        g = b.reduce_to(g, g, c2)
        dc = b.reshape_like(g, c) if rc == 1 else g
    return [da, dc]


def _einsum_terms(n: GradNode) -> tuple[list[str], str]:
    eq = n.text_attr("equation", "").replace(" ", "")
    if "." in eq:
        raise NotDifferentiable("Einsum with an ellipsis")
    lhs, arrow, out = eq.partition("->")
    terms = lhs.split(",")
    if not arrow:  # implicit output: the letters used once, in alphabetical order
        letters = "".join(terms)
        out = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    if len(terms) != len(n.node.input) or any(len(set(t)) != len(t) for t in terms + [out]):
        raise NotDifferentiable(f"Einsum equation {eq!r}: repeated indices (diagonals) are not supported")
    return terms, out


@rule("Einsum")
def _einsum(b: GraphBuilder, n: GradNode):
    # d operand_i = einsum(dY, the other operands -> term_i); letters of term_i found nowhere
    # else were summed over in the forward: the gradient is broadcast back along them.
    terms, out = _einsum_terms(n)
    grads = []
    for i, term in enumerate(terms):
        if not n.need(i):
            grads.append(None)
            continue
        others = [t for j, t in enumerate(terms) if j != i]
        seen = set(out).union(*others) if others else set(out)
        kept = "".join(c for c in term if c in seen)
        eq = ",".join([out] + others) + "->" + kept
        g = b.op("Einsum", [n.dy] + [x for j, x in enumerate(n.node.input) if j != i], equation=eq)
        missing = [k for k, c in enumerate(term) if c not in seen]
        if missing:
            g = b.op("Expand", [b.unsqueeze(g, missing), b.shape_of(n.x(i))])
        grads.append(g)
    return grads
