"""One raw -> model-input transform: the graph prepend, Preprocessing.apply and to_model_input agree."""

import numpy as np
import onnxruntime as ort
from builders import make_model
from onnx import helper

from auditor.model.rewrite.preprocess import Preprocessing, prepend, to_model_input


def test_graph_and_numpy_forms_are_bit_identical():
    pre = Preprocessing(scale=255.0, mean=[10.0, 20.0, 30.0], std=[2.0, 4.0, 8.0])
    m = make_model([helper.make_node("Identity", ["x"], ["y"])], {}, in_shape=("N", 3, 5, 5))
    x = np.random.default_rng(0).random((2, 3, 5, 5)).astype(np.float32)
    got = ort.InferenceSession(prepend(m, pre).SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, pre.apply(x))
    np.testing.assert_array_equal(to_model_input(x, pre), pre.apply(x))


def test_every_form_of_a_transform():
    x = np.random.default_rng(1).random((2, 1, 4, 4))  # float64: converted first
    ref = ((x.astype(np.float32) - np.float32(0.5)) / np.float32(0.25)).astype(np.float32)
    forms = [Preprocessing(mean=[0.5], std=[0.25]), (0.5, 0.25), lambda v: (v - np.float32(0.5)) / np.float32(0.25)]
    for pre in forms:
        y = to_model_input(x, pre)
        assert y.dtype == np.float32 and y.flags.c_contiguous
        np.testing.assert_array_equal(y, ref)
    ident = to_model_input(x)
    assert ident.dtype == np.float32
    np.testing.assert_array_equal(ident, x.astype(np.float32))
    nhwc = to_model_input(x, Preprocessing(layout="NHWC"))
    assert nhwc.shape == (2, 4, 4, 1) and nhwc.flags.c_contiguous
