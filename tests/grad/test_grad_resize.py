"""The Resize gradient rule against onnxruntime's own Resize.

With constant scales/sizes, Resize is linear in X (affine with tf_crop_and_resize's extrapolation
value), so its exact input gradient is the adjoint of onnxruntime's forward map: column i is
obj(e_i) - obj(0), which float32 runs on one-hot inputs give up to rounding.  Comparing the rule
(a product of 1-D maps) with that elementwise checks, for every mode and attribute below, that
onnxruntime's N-D Resize really is separable.  The shared harness adds its float32 unit-step
directional check (``linear=True``) and a float64 reference where one can run.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from auditor.errors import AuditorError
from auditor.grad import add_input_gradient, differentiability, ops_tensor
from auditor.grad.check import directional_check
from test_grad_ops import analytic, build, gradcheck, node, rnd


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _adjoint_by_basis(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """d sum(obj) / dx of a model affine in x, column by column on one-hot inputs (float32)."""
    sess = _session(model)

    def f(v):
        return float(np.sum(sess.run(["obj"], {"x": v})[0], dtype=np.float64))

    base = f(np.zeros_like(x))
    eye = np.eye(x.size, dtype=np.float32)
    return np.array([f(e.reshape(x.shape)) - base for e in eye]).reshape(x.shape)


def _resize(opset, attrs, scales=None, sizes=None, roi=None, name="rz"):
    """(nodes, inits) for y = Resize(x) with constant inputs; opset 11 gets its required roi and
    scales inputs as empty tensors when unused."""
    inits, inputs = {}, ["x"]
    for key, v, dt in (("roi", roi, np.float32), ("scales", scales, np.float32),
                       ("sizes", sizes, np.int64)):
        if v is None and opset < 13 and key != "sizes":
            v = []
        if v is not None:
            inits[key] = np.asarray(v, dt)
        inputs.append(key if v is not None else "")
    while inputs[-1] == "":
        inputs.pop()
    return [helper.make_node("Resize", inputs, ["y"], name=name, **attrs)], inits


def _model(nodes, x, inits, opset):
    """build(), also below opset 13, where the objective's ReduceSum takes axes as attribute."""
    m = build(nodes, {"x": x}, inits, opset=max(opset, 13))
    if opset < 13:
        red = next(nd for nd in m.graph.node if nd.op_type == "ReduceSum")
        axes = next(t for t in m.graph.initializer if t.name == red.input[1])
        red.input.pop()
        red.attribute.append(helper.make_attribute("axes", numpy_helper.to_array(axes).tolist()))
        m.opset_import[0].version = opset
    return m


def _check(nodes, inits, x, opset):
    """The harness's checks (float32 unit steps: linear=True) and the exact adjoint."""
    m = _model(nodes, x, inits, opset)
    if opset >= 13:
        g = gradcheck(nodes, {"x": x}, inits, linear=True, opset=opset)
    else:
        g = analytic(m, {"x": x})
        for an, fd, scale in directional_check(m, "obj", {"x": x}, "x", g, 3, linear=True):
            assert abs(an - fd) <= 3e-5 * scale + 1e-5, (an, fd, scale)
    exact = _adjoint_by_basis(m, x)
    np.testing.assert_allclose(g, exact, rtol=1e-5, atol=1e-5 * (1 + np.abs(exact).max()))
    return g


# (opset, mode, coordinate_transformation_mode, extra attributes)
CASES = [
    (11, "nearest", "half_pixel", {"nearest_mode": "round_prefer_floor"}),
    (13, "nearest", "asymmetric", {"nearest_mode": "floor"}),
    (18, "nearest", "align_corners", {"nearest_mode": "round_prefer_ceil"}),
    (19, "nearest", "pytorch_half_pixel", {"nearest_mode": "ceil"}),
    (13, "nearest", "tf_half_pixel_for_nn", {"nearest_mode": "round_prefer_floor"}),
    (11, "nearest", "tf_crop_and_resize", {"nearest_mode": "round_prefer_ceil"}),
    (19, "nearest", "half_pixel_symmetric", {}),
    (11, "linear", "half_pixel", {}),
    (13, "linear", "asymmetric", {}),
    (13, "linear", "align_corners", {}),
    (18, "linear", "pytorch_half_pixel", {}),
    (13, "linear", "tf_crop_and_resize", {}),
    (19, "linear", "half_pixel_symmetric", {}),
    (18, "linear", "half_pixel", {"antialias": 1}),
    (19, "linear", "align_corners", {"antialias": 1}),
    (11, "cubic", "half_pixel", {"cubic_coeff_a": -0.75}),
    (13, "cubic", "align_corners", {"cubic_coeff_a": -0.5, "exclude_outside": 1}),
    (13, "cubic", "asymmetric", {"exclude_outside": 1}),
    (18, "cubic", "pytorch_half_pixel", {"cubic_coeff_a": -0.5}),
    (19, "cubic", "tf_crop_and_resize", {"exclude_outside": 1}),
    (18, "cubic", "half_pixel", {"antialias": 1}),
    (19, "cubic", "half_pixel_symmetric", {"antialias": 1, "exclude_outside": 1}),
    (18, "nearest", "half_pixel", {"keep_aspect_ratio_policy": "not_larger"}),
    (19, "linear", "half_pixel", {"keep_aspect_ratio_policy": "not_smaller"}),
]


@pytest.mark.parametrize("case", range(len(CASES)))
def test_resize_modes_nchw(case):
    """Random NCHW shapes and scales (up, down, non-integer; scales or sizes; axes on newer
    opsets), every mode and coordinate transformation."""
    opset, mode, ctm, extra = CASES[case]
    rng = np.random.default_rng(case)
    shape = [int(rng.integers(1, 3)), int(rng.integers(1, 3))] + \
        [int(rng.integers(2, 7)) for _ in range(2)]
    factors = [float(rng.choice([0.5, 2.0, 3.0, np.float32(rng.uniform(0.4, 2.6))]))
               for _ in range(2)]
    if "antialias" in extra:  # it only matters when downsampling
        shape[2:] = [int(rng.integers(5, 9)) for _ in range(2)]
        factors[0] = float(np.float32(rng.uniform(0.25, 0.8)))
    attrs = dict(mode=mode, coordinate_transformation_mode=ctm, **extra)
    policy = "keep_aspect_ratio_policy" in extra
    axes = [2, 3] if opset >= 18 and (policy or case % 2) else [0, 1, 2, 3]
    if len(axes) == 2:
        attrs["axes"] = [-2, -1] if case % 4 == 3 and not policy else axes
    roi = None
    if ctm == "tf_crop_and_resize":
        k = len(axes)
        starts = [0.0] * (k - 2) + [float(v) for v in rng.uniform(-0.2, 0.3, 2)]
        ends = [1.0] * (k - 2) + [float(v) for v in rng.uniform(0.7, 1.2, 2)]
        roi = starts + ends
        attrs["extrapolation_value"] = 0.7
    full = [1.0] * (4 - len(axes)) + [1.0] * (len(axes) - 2) + factors
    if policy or case % 3 == 2:
        sizes = [max(1, round(d * f)) for d, f in zip(shape, [1.0, 1.0] + factors)]
        nodes, inits = _resize(opset, attrs, sizes=sizes[4 - len(axes):], roi=roi)
    else:
        nodes, inits = _resize(opset, attrs, scales=full[4 - len(axes):], roi=roi)
    _check(nodes, inits, rnd(shape, case), opset)


LAYOUTS = {  # name: (opset, shape, attributes, scales[, roi])
    "nhwc_linear": (13, [1, 3, 4, 2], {"mode": "linear"}, [1, 1.5, 0.5, 1]),
    "nhwc_cubic": (13, [2, 3, 4, 2], {"mode": "cubic"}, [1, 2, 1.5, 1]),
    # onnxruntime's NHWC cubic leaves an axis whose size does not change alone, the NCHW one
    # interpolates it: the maps are then measured on the node itself
    "nhwc_cubic_same_size_axis": (13, [1, 3, 2, 1], {"mode": "cubic"}, [1, 2, 1.19, 1]),
    "trilinear_5d": (13, [1, 2, 3, 4, 2], {"mode": "linear"}, [1, 1, 2, 0.5, 1.5]),
    "linear_3d": (13, [3, 4, 2], {"mode": "linear"}, [2, 0.5, 1.5]),
    "cubic_2d": (18, [4, 5], {"mode": "cubic", "antialias": 1}, [1.5, 0.6]),
    "nearest_batch_and_channels": (13, [2, 3, 2, 2], {"mode": "nearest"}, [2, 0.5, 1.5, 1]),
    "nearest_1d": (13, [5], {"mode": "nearest"}, [2.4]),
    # an axis with scale 1 that the roi would crop (onnxruntime leaves it as it is)
    "crop_unit_scale": (13, [1, 2, 4, 5], {"mode": "linear", "coordinate_transformation_mode":
                                           "tf_crop_and_resize", "extrapolation_value": 2.0},
                        [1, 1, 1, 1.5], [0, 0, 0.1, -0.1, 1, 1, 0.8, 0.9]),
    # no size changes: onnxruntime copies X whatever the scales
    "same_sizes": (13, [1, 2, 5, 5], {"mode": "linear"}, [1, 1, 1.1, 1.15]),
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_resize_layouts(name):
    opset, shape, attrs, scales, *roi = LAYOUTS[name]
    nodes, inits = _resize(opset, attrs, scales=scales, roi=roi[0] if roi else None)
    x = rnd(shape, 7)
    g = _check(nodes, inits, x, opset)
    if name == "same_sizes":
        m = build(nodes, {"x": x}, inits, opset=opset)
        r = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == "R"))
        np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("case", [1, 5, 11, 14, 19, 21])
def test_common_resizes_measure_each_axis_alone(case, monkeypatch):
    """The maps come from cheap 1-D runs, not from probing the node at full size (which
    would also give right answers, slowly)."""
    def refuse(*args):
        raise AssertionError("probed the node")

    monkeypatch.setattr(ops_tensor, "_maps_of_node", refuse)
    ops_tensor._resize_maps.cache_clear()
    test_resize_modes_nchw(case)


def test_maps_measured_on_the_node_multiply_back_to_it():
    """Probing with one-hot x ones gives each map up to a scale; the scales must cancel, also
    for maps whose rows do not sum to 1."""
    rng = np.random.default_rng(0)
    maps = {1: rng.uniform(0.2, 1, (5, 3)), 2: rng.uniform(0.2, 1, (2, 4)),
            3: rng.uniform(0.2, 1, (3, 3))}
    got = ops_tensor._maps_of_node(lambda x: ops_tensor._apply_maps(x, maps), [1, 3, 4, 3],
                                   [1, 2, 3])
    x = rng.standard_normal((1, 3, 4, 3))
    np.testing.assert_allclose(ops_tensor._apply_maps(x, got), ops_tensor._apply_maps(x, maps),
                               rtol=1e-5)


def _two_convs(resize_attrs: dict, scales, batch="N"):
    """Conv -> Relu -> Resize -> Conv -> GlobalAveragePool -> Flatten -> Gemm."""
    rng = np.random.default_rng(5)
    inits = {"w1": rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.4,
             "b1": rng.standard_normal(4).astype(np.float32) * 0.1,
             "w2": rng.standard_normal((2, 4, 3, 3)).astype(np.float32) * 0.3,
             "wf": rng.standard_normal((3, 2)).astype(np.float32),
             "scales": np.asarray(scales, np.float32)}
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"]),
             helper.make_node("Resize", ["r1", "", "scales"], ["up"], name="up", **resize_attrs),
             node("Conv", ["up", "w2"], ["c2"]),
             node("GlobalAveragePool", ["c2"], ["p"]),
             node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "wf"], ["y"], transB=1)]
    return nodes, inits


def test_end_to_end_nearest_upsampling():
    nodes, inits = _two_convs({"mode": "nearest"}, [1, 1, 2, 2])
    x = rnd((2, 3, 5, 5), 3)
    m = build(nodes, {"x": x}, inits, opset=13)
    grad_model = add_input_gradient(m, "obj", wrt="x")
    # integer nearest upsampling: the adjoint sums the copies (Reshape + ReduceSum, no MatMul)
    assert not [nd for nd in grad_model.graph.node if nd.op_type == "MatMul"]
    gradcheck(nodes, {"x": x}, inits, opset=13, n_dirs=4)


def test_end_to_end_bilinear_with_dynamic_batch():
    nodes, inits = _two_convs({"mode": "linear"}, [1, 1, 1.6, 1.6])
    x = rnd((3, 3, 5, 5), 4)
    gradcheck(nodes, {"x": x}, inits, opset=13, n_dirs=4)
    static = analytic(build(nodes, {"x": x}, inits, opset=13), {"x": x})
    # the same model with a symbolic batch: the gradient does not depend on it
    m = build(nodes, {"x": x}, inits, opset=13)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    grad_model = add_input_gradient(m, "obj", wrt="x")
    assert not [nd for nd in grad_model.graph.node if nd.op_type == "Transpose"]
    np.testing.assert_allclose(_session(grad_model).run(["grad_input"], {"x": x})[0], static,
                               rtol=1e-5, atol=1e-6)


def test_scales_fed_at_run_time_are_reported():
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["y"], name="up", mode="linear")]
    feeds = {"x": rnd((1, 2, 3, 3)), "sc": np.asarray([1, 1, 2, 2], np.float32)}
    m = build(nodes, feeds, opset=13)
    with pytest.raises(AuditorError, match="Resize node 'up'.*constant scales"):
        add_input_gradient(m, "obj", wrt="x")
    assert [(n, op) for n, op, _ in differentiability(m)] == [("up", "Resize")]


@pytest.mark.parametrize("what", ["resized_symbolic_axis", "nhwc_cubic_crop",
                                  "policy_negative_axes"])
def test_unsupported_resize_is_refused(what):
    if what == "resized_symbolic_axis":
        nodes, inits = _resize(13, {"mode": "nearest"}, scales=[2, 1, 1, 1])
        m = build(nodes, {"x": rnd((1, 2, 3, 3))}, inits, opset=13, dynamic=True)
        reason = "static size for axis 0"
    elif what == "policy_negative_axes":
        # onnxruntime ignores negative axes under a keep_aspect_ratio_policy: its output
        # disagrees with the shape inferred for Y, which other rules rely on
        nodes, inits = _resize(18, {"mode": "nearest", "axes": [-2, -1],
                                    "keep_aspect_ratio_policy": "not_smaller"}, sizes=[6, 6])
        m = build(nodes, {"x": rnd((1, 2, 3, 2))}, inits, opset=18)
        reason = "onnxruntime's Resize gives size 3 to axis 2, shape inference 9"
    else:
        # onnxruntime's NHWC cubic tf_crop_and_resize extrapolates differently per channel:
        # not a product of 1-D maps, so refused rather than approximated
        nodes, inits = _resize(13, {"mode": "cubic", "coordinate_transformation_mode":
                                    "tf_crop_and_resize"}, sizes=[1, 4, 1, 2],
                               roi=[0.22, -0.01, -0.17, 0.01, 0.71, 0.75, 0.72, 0.98])
        m = build(nodes, {"x": rnd((1, 2, 1, 2))}, inits, opset=13)
        reason = "not a product of 1-D interpolations"
    with pytest.raises(AuditorError, match=f"Resize node 'rz'.*{reason}"):
        add_input_gradient(m, "obj", wrt="x")


def test_scales_from_a_constant_node():
    scales = helper.make_tensor("s", TensorProto.FLOAT, [4], [1, 1, 2, 1.5])
    nodes = [helper.make_node("Constant", [], ["sc"], value=scales),
             helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear")]
    _check(nodes, {}, rnd((1, 2, 3, 4), 2), 13)
