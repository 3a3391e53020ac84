"""The one node-naming rule and the fresh-name helper of auditor.model.names."""

from onnx import TensorProto, helper

from auditor.model.names import Names, graph_names, name_nodes, node_names


def _graph(names):
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=n) for i, n in enumerate(names)]
    return helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1])],
                             [helper.make_tensor_value_info(f"t{len(names)}", TensorProto.FLOAT, [1])])


def test_node_names_keep_first_holders_and_number_the_rest():
    # unnamed -> <op>_<index>; a repeat -> <name>_<index>; a generated name never takes a later node's own name
    g = _graph(["", "a", "a", "Relu_0", "", "a_2"])
    assert node_names(g) == ["Relu_0_", "a", "a_2_", "Relu_0", "Relu_4", "a_2"]
    assert len(set(node_names(g))) == len(g.node)
    name_nodes(g)
    assert [n.name for n in g.node] == ["Relu_0_", "a", "a_2_", "Relu_0", "Relu_4", "a_2"]
    assert node_names(g) == [n.name for n in g.node]  # naming is idempotent


def test_fresh_names_count_up_from_the_hint():
    model = helper.make_model(_graph(["r"]))
    names = Names.of(model)
    assert {"t0", "t1", "r"} <= graph_names(model)
    assert names.fresh("t1") == "t1_1"
    assert names.fresh("t1") == "t1_2"
    assert names.fresh("new") == "new"
    assert names.fresh("new") == "new_1"
