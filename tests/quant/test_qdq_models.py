"""QDQ models from onnxruntime's static quantizer (spa.testing.quant.quantize): pruned,
they stay quantized, equal the masked original (the removed channels' integers zeroed,
the compensation requantized the same way), and stay within quantization noise of the
float-equivalent model pruned the same way."""

import numpy as np
import pytest

import spa
from spa.measure.bench import cpu_info
from spa.runtime import run
from spa.testing.nets import conv_bn_relu, mobilenetv2, resnet
from spa.testing.oracle import assert_oracle, feeds
from spa.testing.quant import dequantized, float_weights, quantize

NETS = {"conv_bn_relu": conv_bn_relu, "resnet": resnet, "mobilenetv2": mobilenetv2}
SCHEMES = {"int8_per_channel": {}, "uint8_per_tensor": {"per_channel": False, "weight": "uint8",
                                                        "activation": "uint8"}}
# how far the pruned model may be from the float one pruned the same way, in units of the
# original's quantization noise: a per-tensor scale grown for a compensated weight coarsens
# every channel (measured: 1.5-2.2x; 1.0-1.3x per channel)
NOISE = {"int8_per_channel": 2.0, "uint8_per_tensor": 3.0}


def _vnni() -> bool:
    """Whether this x86 CPU has VNNI. Without it onnxruntime's int8 x int8 kernels add pairs of
    products in 16 bits, which saturate: a removed channel then moves its neighbours' sums (the
    masked original and the pruned model differed by 0.15 on an AVX2 EPYC, at f8cf257 as now)."""
    flags = cpu_info()[1]
    return "avx2" not in flags or any("vnni" in f for f in flags)


def rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("net", NETS)
def test_qdq_model_prunes_and_stays_quantized(net, scheme):
    if scheme == "int8_per_channel" and not _vnni():
        pytest.skip("int8 activations x int8 weights saturate in onnxruntime's kernels on x86 without VNNI")
    q = quantize(NETS[net](), **SCHEMES[scheme])
    r = spa.prune(q, ratio=0.3, seed=0)
    assert r.macs_reduction > 0.3
    assert_oracle(q, r)
    assert set(float_weights(r.model)) <= set(float_weights(q)), "a float weight was added"
    dq = [n for n in r.model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dq) == len([n for n in q.graph.node if n.op_type == "DequantizeLinear"]) + \
        sum(n.input[0].endswith("_spa_bias_quantized") for n in dq)
    # the float-equivalent graph with the same channels removed and the same compensation
    x = feeds(q, batch=8)
    floats = dequantized(q)
    same_way = run(spa.masked(floats, r.sinks, r.updates), x)
    pruned, original, float_original = run(r.model, x), run(q, x), run(floats, x)
    for name, want in same_way.items():
        noise = rms(original[name], float_original[name])
        assert rms(pruned[name], want) < NOISE[scheme] * noise + 1e-6, (name, rms(pruned[name], want), noise)
