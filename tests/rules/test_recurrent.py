"""spa/rules/recurrent.py: LSTM, GRU and RNN prune their hidden size across the gate
blocks of W, R and B, the states and the outputs, and their input channels through W;
the masked-equivalence oracle holds for both directions and both layouts."""

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import spa
from spa.testing.graphs import Graph
from spa.testing.lookup import attr, group_with, shape
from spa.testing.oracle import check_oracle, feeds

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
S, F, I, H, O = 5, 6, 10, 12, 4  # steps, features, LSTM input size, hidden size, outputs


def recurrent(op="LSTM", direction="forward", layout=0, finals=False, states=False, peepholes=False):
    """x [S, N, F] (layout 1: [N, S, F]) -> MatMul(F->I) + bias -> op(hidden H) -> Y
    [S, D, N, H] (layout 1: [N, S, D, H]) -> Transpose to [.., N/S, D, H] -> Reshape
    [.., D*H] -> MatMul(D*H->O) -> y. With `finals`: Y_h (and Y_c) [D, N, H] (layout 1:
    [N, D, H]) -> Transpose/Reshape [N, D*H] -> MatMul -> extra outputs. `states`:
    constant initial states; `peepholes`: constant P (LSTM)."""
    g = Graph(seed=3)
    d = 2 if direction == "bidirectional" else 1
    gates = GATES[op]
    x = g.op("Add", [g.op("MatMul", ["x", g.w("proj_w", F, I)], name="proj"), g.w("proj_b", I, scale=0.1)],
             name="proj_add")
    ins = [x, g.w("W", d, gates * H, I), g.w("R", d, gates * H, H), g.w("B", d, 2 * gates * H, scale=0.1)]
    batch_shape = [d, 2, H] if layout == 0 else [2, d, H]
    if states or peepholes:
        ins += ["", g.w("h0", *batch_shape, scale=0.5) if states else ""]
        if op == "LSTM":
            ins += [g.w("c0", *batch_shape, scale=0.5) if states else ""]
            ins += [g.w("P", d, 3 * H, scale=0.3)] if peepholes else []
    n_out = {"LSTM": 3, "GRU": 2, "RNN": 2}[op] if finals else 1
    outs = g.op(op, ins, n_out=n_out, name="rnn", hidden_size=H, direction=direction, layout=layout)
    outs = outs if isinstance(outs, list) else [outs]
    y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3]) if layout == 0 else outs[0]
    y = g.op("Reshape", [y, g.ints("y_shape", [0, 0, d * H])])
    results = [g.op("MatMul", [y, g.w("head_w", d * H, O)], name="head")]
    for k, t in enumerate(outs[1:]):
        t = g.op("Transpose", [t], perm=[1, 0, 2]) if layout == 0 else t
        t = g.op("Reshape", [t, g.ints(f"f{k}_shape", [0, d * H])])
        results.append(g.op("MatMul", [t, g.w(f"final{k}_w", d * H, O)], name=f"final{k}"))
    xs = [S, 2, F] if layout == 0 else [2, S, F]
    return g.model({"x": xs}, results)


def oracle(model, layout):
    """check_oracle; for layout 1, which onnxruntime's CPU kernels refuse ("Batchwise
    recurrent operations (layout == 1) are not supported"), the same oracle run in onnx's
    reference evaluator (it matches onnxruntime on layout 0, and its layout 1 matches its
    layout 0 on transposed inputs), pruned without the onnxruntime checks."""
    if layout == 0:
        return check_oracle(model)
    r = spa.prune(model, ratio=0.3, round_to=1, seed=0, criterion="l2", verify=False)
    assert r.changes
    x = feeds(model)
    want = ReferenceEvaluator(spa.masked(model, r.sinks, r.updates)).run(None, x)
    got = ReferenceEvaluator(r.model).run(None, x)
    original = ReferenceEvaluator(model).run(None, x)
    for g, w, o in zip(got, want, original):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)
    assert any(not np.allclose(o, w, rtol=1e-4, atol=1e-5) for o, w in zip(original, want))
    return r


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_hidden_and_input_oracle(op, direction, layout):
    m = recurrent(op, direction, layout)
    an = spa.analyze(m)
    hidden = group_with(an, "R[2]")
    assert hidden.prunable, hidden.reason
    assert {"W[1]", "R[1]", "B[1]", "head_w[0]"} <= set(hidden.members)
    inputs = group_with(an, "W[2]")
    assert inputs.prunable, inputs.reason
    assert "proj_w[1]" in inputs.members
    r = oracle(m, layout)
    d, gates = (2 if direction == "bidirectional" else 1), GATES[op]
    h, i = shape(r.model, "R")[2], shape(r.model, "W")[2]
    assert h < H and i < I
    assert shape(r.model, "W") == (d, gates * h, i) and shape(r.model, "R") == (d, gates * h, h)
    assert shape(r.model, "B") == (d, 2 * gates * h)
    assert shape(r.model, "head_w") == (d * h, O)
    assert attr(r.model, "rnn", "hidden_size") == h


@pytest.mark.parametrize("layout", [0, 1])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_lstm_states_peepholes_and_final_outputs(direction, layout):
    m = recurrent("LSTM", direction, layout, finals=True, states=True, peepholes=True)
    hidden = group_with(spa.analyze(m), "R[2]")
    assert hidden.prunable, hidden.reason
    assert {"h0[2]", "c0[2]", "P[1]", "final0_w[0]", "final1_w[0]"} <= set(hidden.members)
    r = oracle(m, layout)
    d, h = (2 if direction == "bidirectional" else 1), shape(r.model, "R")[2]
    assert h < H
    assert shape(r.model, "P") == (d, 3 * h)
    assert shape(r.model, "h0") == shape(r.model, "c0") == ((d, 2, h) if layout == 0 else (2, d, h))


@pytest.mark.parametrize("op", ["GRU", "RNN"])
def test_gru_rnn_final_state(op):
    m = recurrent(op, "bidirectional", 0, finals=True, states=True)
    r = check_oracle(m)
    assert shape(r.model, "h0")[2] == shape(r.model, "R")[2] < H


def test_weights_computed_at_run_time_block():
    """W read through an Identity of a graph input is no constant: nothing to slice."""
    g = Graph(seed=0)
    w = g.op("Identity", ["w_in"])
    y = g.op("LSTM", ["x", w, g.w("R", 1, 4 * H, H)], name="rnn", hidden_size=H)
    m = g.model({"x": [S, 2, I], "w_in": [1, 4 * H, I]}, [y])
    assert not any(gr.prunable for gr in spa.analyze(m).groups)


def stacked_with_zero_fill():
    """Two stacked LSTMs whose zero initial states come, as the TorchScript exporter writes
    them, from one ConstantOfShape [2, N, H] sized from the input's batch at run time and
    sliced per layer."""
    g = Graph(seed=5)
    batch = g.op("Gather", [g.op("Shape", ["x"]), g.ints("one", [1])], axis=0)
    size = g.op("Concat", [g.ints("layers", [2]), batch, g.ints("hid", [H])], axis=0)
    fill = g.op("ConstantOfShape", [size], value=helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]))
    x = "x"
    for k in range(2):
        state = g.op("Slice", [fill, g.ints(f"s{k}", [k]), g.ints(f"e{k}", [k + 1]), g.ints(f"a{k}", [0])])
        width = F if k == 0 else H
        y, _, _ = g.op("LSTM", [x, g.w(f"W{k}", 1, 4 * H, width), g.w(f"R{k}", 1, 4 * H, H),
                                 g.w(f"B{k}", 1, 8 * H, scale=0.1), "", state, state], n_out=3, name=f"rnn{k}",
                       hidden_size=H)
        x = g.op("Squeeze", [y, g.ints(f"sq{k}", [1])])
    return g.model({"x": [S, 2, F]}, [g.op("MatMul", [x, g.w("head_w", H, O)], name="head")])


def test_zero_initial_states_from_a_shared_fill_do_not_tie_layers():
    m = stacked_with_zero_fill()
    an = spa.analyze(m)
    first, second = group_with(an, "R0[2]"), group_with(an, "R1[2]")
    assert first.prunable and second.prunable and first.id != second.id  # the shared fill ties nothing
    r = check_oracle(m)
    assert shape(r.model, "R0")[2] < H and shape(r.model, "R1")[2] < H
    rnns = [n for n in r.model.graph.node if n.op_type == "LSTM"]
    assert all(len(n.input) < 6 or not n.input[5] for n in rnns)  # absent: zeros of the new size
    assert not any(n.op_type == "ConstantOfShape" for n in r.model.graph.node)


def gates_reordered_at_run_time():
    """The dynamo exporter's LSTM: W and R are PyTorch's [4H, in] parameters, their gate
    blocks sliced (i, f, g, o), concatenated in ONNX's order (i, o, f, c) and unsqueezed
    for the direction axis at run time."""
    g = Graph(seed=7)

    def onnx_order(name, width):
        p = g.w(name, 4 * H, width)
        blocks = [g.op("Slice", [p, g.ints(f"{name}_s{k}", [k * H]), g.ints(f"{name}_e{k}", [(k + 1) * H]),
                                 g.ints(f"{name}_a{k}", [0])]) for k in (0, 3, 1, 2)]
        return g.op("Unsqueeze", [g.op("Concat", blocks, axis=0), g.ints(f"{name}_u", [0])])
    y, _, _ = g.op("LSTM", ["x", onnx_order("w_ih", F), onnx_order("w_hh", H), g.w("B", 1, 8 * H, scale=0.1)],
                   n_out=3, name="rnn", hidden_size=H)
    y = g.op("Squeeze", [y, g.ints("sq", [1])])
    return g.model({"x": [S, 2, F]}, [g.op("MatMul", [y, g.w("head_w", H, O)], name="head")])


def test_weights_built_from_parameters_by_views_are_folded():
    m = gates_reordered_at_run_time()
    hidden = next(gr for gr in spa.analyze(m).groups if any(k.endswith("[2]") and "folded" in k for k in gr.members))
    assert hidden.prunable, hidden.reason
    r = check_oracle(m)
    h = attr(r.model, "rnn", "hidden_size")
    assert h < H and shape(r.model, "head_w") == (h, O)
