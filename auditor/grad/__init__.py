"""Input gradients of ONNX models, built as plain ONNX ops appended to the model.

``add_input_gradient(model, objective)`` returns a model whose outputs are the original ones plus
d(sum(objective))/d(input), so onnxruntime computes forward and backward in one ``session.run``.
``differentiability(model)`` lists the nodes that block such a gradient.  The gradient rules (one
small function per op) live in one module per op family (``ops_elementwise``, ``ops_tensor``,
``ops_conv``, ``ops_matmul``, ``ops_norm``, ``ops_reduce``, ``ops_pool``, ``ops_quant``; the window
geometry that convolutions and pooling share in ``window``); ``RULES`` maps op types to them.
"""

from .backward import add_input_gradient, differentiability
from .builder import NotDifferentiable
from .canon import upgrade_opset
from .registry import RULES

__all__ = ["add_input_gradient", "differentiability", "upgrade_opset", "RULES", "NotDifferentiable"]
