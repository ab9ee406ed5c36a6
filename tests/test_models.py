"""Real models: onnx's Caffe2-era light_* zoo (ConstantOfShape weights), the bundled
MNIST CNN, and a model whose weights live in an external data file."""

import os

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

import spa
from spa.testing.nets import ALL
from spa.testing.oracle import assert_oracle

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_light_resnet50_loses_40_percent_of_macs(tmp_path):
    out = tmp_path / "r50.onnx"
    result = spa.prune(os.path.join(LIGHT, "light_resnet50.onnx"), str(out), ratio=0.3)
    assert result.macs_reduction >= 0.40
    onnx.checker.check_model(onnx.load(out), full_check=True)


def random_fills(model, seed=0):
    """The same model with each ConstantOfShape weight replaced by seeded random values:
    uniform fills make every channel alike, so masking could not change the output."""
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = inits[node.input[0]]
            if len(shape) > 1:
                value = rng.standard_normal(shape) * np.sqrt(2 / np.prod(shape[1:]))
            else:  # biases and norm parameters; BatchNorm variances must stay positive
                value = rng.uniform(0.5, 1.5, shape)
            value = value.astype(np.float32)
            node.op_type, node.input[:] = "Constant", []
            del node.attribute[:]
            node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(value)))
    return model


@pytest.mark.parametrize("name", ["squeezenet", "inception_v1", "inception_v2"])
def test_light_models_match_masked_original(name):
    model = random_fills(onnx.load(os.path.join(LIGHT, f"light_{name}.onnx")))
    result = spa.prune(model, ratio=0.3, criterion="random", seed=1)
    assert result.macs_reduction > 0.2
    assert_oracle(model, result)


def test_mnist_example_matches_masked_original():
    path = os.path.join(ROOT, "models", "mnist_cnn.onnx")
    result = spa.prune(path, ratio=0.3)
    assert result.macs_reduction >= 0.40
    assert_oracle(onnx.load(path), result)


def test_external_data_weights_are_found_and_sliced(tmp_path):
    model = ALL["resnet"]()
    path = tmp_path / "ext.onnx"
    onnx.save(ALL["resnet"](), path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="ext.data", size_threshold=0)
    assert (tmp_path / "ext.data").exists()
    result = spa.prune(str(path), str(tmp_path / "out.onnx"), ratio=0.3)
    assert result.macs_reduction > 0.3
    assert_oracle(model, result)


def test_shufflenet_v1_prunes_inside_its_groups_and_names_what_stays_tied():
    # Grouped 1x1 convs (4 groups) lose the same offsets in every group; where a channel
    # shuffle meets groups whose width is not a multiple of 4, index ties join every channel.
    path = os.path.join(LIGHT, "light_shufflenet.onnx")
    top = max(spa.analyze(path).groups, key=lambda g: g.macs_share)
    assert top.channels == 1 and not top.prunable and "tied into one unit" in top.reason
    result = spa.prune(path, ratio=0.3)
    assert result.macs_reduction > 0.1 and result.exact
    model = _random_fills(onnx.load(path))  # constant fills would make every channel alike
    assert_oracle(model, spa.prune(model, ratio=0.3))


def _random_fills(model, seed=0):
    """The model with every ConstantOfShape weight replaced by a seeded random initializer."""
    rng = np.random.default_rng(seed)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    keep = []
    for n in model.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = tuple(int(d) for d in inits[n.input[0]])
            value = rng.uniform(0.5, 1.5, shape) if n.output[0].endswith(("_s_0", "_riv_0")) else \
                rng.standard_normal(shape) * (0.5 / np.sqrt(max(np.prod(shape[1:]), 1)) if len(shape) > 1 else 0.1)
            model.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), n.output[0]))
        else:
            keep.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep)
    model.ir_version = max(model.ir_version, 4)  # IR 3 wants every initializer listed as an input
    return model

def _fills(model):
    return {o for n in model.graph.node if n.op_type == "ConstantOfShape" for o in n.output}


@pytest.mark.parametrize("name", sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT)
                                        if f.startswith("light_") and f.endswith(".onnx")))
def test_light_models_grow_only_where_compensation_changed_a_fill(name, tmp_path):
    """Weights stored as fills stay fills when only sliced; a pruned file larger than its input
    says why in one note, and what it names accounts for the growth (#20)."""
    src, out = os.path.join(LIGHT, f"light_{name}.onnx"), tmp_path / "pruned.onnx"
    r = spa.prune(src, str(out), ratio=0.3)
    original, pruned = onnx.load(src), onnx.load(out)
    fills = _fills(original)
    dense = {n.output[0]: n for n in pruned.graph.node if n.op_type == "Constant" and n.output[0] in fills}
    for t, node in dense.items():  # stored with values only where the values are no longer one fill
        values = numpy_helper.to_array(node.attribute[0].t).reshape(-1)
        assert values.size > 1 and not np.all(values == values[0]), t
    assert _fills(pruned) >= fills - set(dense) - {o for n in original.graph.node for o in n.output
                                                   if o not in {x for m in pruned.graph.node for x in m.output}}
    before, after = os.path.getsize(src), os.path.getsize(out)
    grew = [n for n in r.notes if n.startswith("the file grew")]
    assert len(grew) == (after > before)
    if after > before:
        assert f"{len(dense)} weight fill(s)" in grew[0] if dense else "weight fill" not in grew[0]
        explained = sum(n.ByteSize() for n in dense.values()) + sum(p.ByteSize() for p in pruned.metadata_props)
        shapes = sum(t.ByteSize() for t in pruned.graph.initializer if t.name not in {i.name for i in original.graph.initializer})
        assert after - before <= explained + shapes + 64, grew[0]
