"""The rule contract: how channels flow through one op, and how to shrink it.

A *space* is one axis of one tensor, written (tensor name, axis). A rule's `couple`
links elements of spaces together (element i of space A must go with element j of
space B) and marks which spaces it *handles*. Any axis of a node's tensor that the
rule does not handle blocks every channel group that reaches it.

Adding an op (the checklist):
1. Copy the closest rule family in this package (elementwise.py for a pass-through op,
   gemm.py for an op with a weight, slicing.py for offsets) and register a Rule subclass
   for the op type(s) with @register; a new family file also goes into FAMILIES in
   rules/__init__.py (tests/rules/test_registry.py fails otherwise).
2. `couple`: link each axis that carries channels with Flow.identity / offset / block /
   pairs; mark weight axes with Flow.param(t, axis, "in" | "out" | "elem" | "stat" | "quant"); leave
   an axis unhandled, or Flow.refuse it with a reason, when channels cannot pass.
3. `shrink`: update attributes and shape constants from `keep` (parameters are sliced for you).
4. Ops with multiply-accumulates: `macs`; ops whose weight the statistics read: `data_axis`.
5. Test: copy a case of tests/rules/test_elementwise.py: build the op between two convs
   (spa.testing.graphs), prune, and check the masked-equivalence oracle.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from ..io import Model, const_value
from ..io.quant import dequantize, dq_node

# Roles of parameter spaces: "in" is contracted away (a consumer's input slice),
# "out" produces the channel, "elem" acts per channel, "stat" is a running statistic,
# "quant" is the stored form of a quantized weight (integers, scale, zero point): sliced
# with the weight, never scored (scores read the dequantized value).
ROLES = ("in", "out", "elem", "stat", "quant")


class Ctx:
    """Read access to a model's shapes and constants, shared by all rules.

    `inner`: a Reshape that splits one axis into several (hidden -> heads x head_dim)
    or merges them back maps the innermost of them instead of the outermost, so that
    head_dim slices form the groups (see spa.api: a second channel graph).
    """

    def __init__(self, model: Model, inner: bool = False):
        self.model = model
        self.inner = inner
        self.opset = model.opset
        self.tensors = model.graph.tensors()
        self._consts: dict = {}
        self._computed: dict = {}
        self._fresh = 0
        self._shapes: dict = {}  # shape: the constant fills resized to it share (fill_shape)

    def shape(self, t) -> tuple | None:
        if isinstance(t, gs.Constant):
            return tuple(t.shape)
        return self.model.shapes.get(t.name)

    def dynamic(self, t, axis) -> bool:
        """True when the axis size follows a dynamic input dim (batch, sequence)."""
        return (t.name, axis) in self.model.dynamic

    def rank(self, t) -> int | None:
        s = self.shape(t)
        return None if s is None else len(s)

    def dim(self, t, axis) -> int | None:
        s = self.shape(t)
        if s is None or not -len(s) <= axis < len(s):
            return None
        return s[axis]

    def const(self, t) -> np.ndarray | None:
        """A constant's value; a DequantizeLinear of constants reads as its float value."""
        if t is None or not t.name:
            return None
        if t.name not in self._consts:
            value = const_value(t)
            node = dq_node(t) if value is None else None
            self._consts[t.name] = dequantize(node) if node is not None else value
        return self._consts[t.name]

    def computed(self, t) -> bool:
        """True for a tensor computed in the graph from constants alone (a weight
        standardised, normalised or scaled at run time): a reduction over one of its
        axes is a statistic of a parameter, not a mix of activations."""
        if t is None or not t.name or self.const(t) is not None:
            return False
        todo = [t]
        while todo:
            cur = todo[-1]
            if cur.name in self._computed:
                todo.pop()
                continue
            node = cur.inputs[0] if len(cur.inputs) == 1 else None
            if node is None or not node.inputs or any(isinstance(v, gs.Graph) for v in node.attrs.values()):
                self._computed[cur.name] = False  # a graph input, or a source such as RandomNormal
                todo.pop()
                continue
            ins = [i for i in node.inputs if i.name and self.const(i) is None]
            pending = [i for i in ins if i.name not in self._computed]
            if pending:
                todo.extend(pending)
                continue
            self._computed[cur.name] = all(self._computed[i.name] for i in ins)
            todo.pop()
        return self._computed[t.name]

    def remember(self, t, value):
        """The value `t` now holds (its store was just rewritten), for later const() reads."""
        self._consts[t.name] = value

    def ints(self, t) -> list | None:
        """A constant integer input as a list, or None."""
        v = self.const(t)
        return None if v is None else [int(x) for x in np.asarray(v).reshape(-1)]

    def fill_shape(self, shape) -> gs.Constant:
        """One int64 shape constant per shape, shared by the ConstantOfShape fills resized to
        it (a fresh one per fill made a weightless DenseNet-121's file 28 KB larger)."""
        key = tuple(int(d) for d in shape)
        if key not in self._shapes:
            name = "spa_fill_shape_" + ("x".join(map(str, key)) or "scalar")
            self._shapes[key] = gs.Constant(name, np.asarray(key, dtype=np.int64))
        return self._shapes[key]

    def set_input(self, node, index, value):
        """Give `node` a fresh constant for input `index` (appended if past the end),
        leaving other users of the old tensor alone."""
        self._fresh += 1
        old = node.inputs[index].name if index < len(node.inputs) else ""
        const = gs.Constant(f"{old or node.name or node.op}__spa{self._fresh}", np.asarray(value))
        if index < len(node.inputs):
            node.inputs[index] = const
        else:
            node.inputs.append(const)


class Flow:
    """What one node says about its channels: links, handled spaces, param roles."""

    def __init__(self, node, ctx: Ctx):
        self.node = node
        self.ctx = ctx
        self.links: list = []
        self.handled: set = set()
        self.roles: dict = {}
        self.reasons: dict = {}
        self.same: list = []  # (space a, space b, factor, reason): b keeps factor times a's elements
        self.lossy: set = set()  # handled spaces whose pruning changes more than zeroing would
        self.tags: dict = {}  # space -> tag ("heads")

    def space(self, t, axis):
        """(name, axis) with the axis made non-negative, or None when the size is unknown."""
        if t is None or not t.name:
            return None
        rank = self.ctx.rank(t)
        if rank is None or not -rank <= axis < rank:
            return None
        axis %= rank
        size = self.ctx.dim(t, axis)
        if not isinstance(size, int) or size < 1:
            return None
        return (t.name, axis)

    def size(self, t, axis) -> int | None:
        return self.ctx.dim(t, axis) if self.space(t, axis) else None

    def pairs(self, a, a_axis, b, b_axis, ia, ib) -> bool:
        """Link element ia[k] of (a, a_axis) with ib[k] of (b, b_axis)."""
        sa, sb = self.space(a, a_axis), self.space(b, b_axis)
        if sa is None or sb is None:
            return False
        self.links.append((sa, sb, np.asarray(ia, np.int64), np.asarray(ib, np.int64)))
        self.handled.update((sa, sb))
        return True

    def identity(self, a, a_axis, b, b_axis) -> bool:
        n, m = self.size(a, a_axis), self.size(b, b_axis)
        if n is None or n != m:
            return False
        idx = np.arange(n)
        return self.pairs(a, a_axis, b, b_axis, idx, idx)

    def offset(self, a, a_axis, b, b_axis, start) -> bool:
        """a[i] goes with b[start + i]."""
        n, m = self.size(a, a_axis), self.size(b, b_axis)
        if n is None or m is None or start + n > m:
            return False
        idx = np.arange(n)
        return self.pairs(a, a_axis, b, b_axis, idx, idx + start)

    def block(self, a, a_axis, b, b_axis, size) -> bool:
        """a[i] goes with the block b[i*size:(i+1)*size]."""
        n, m = self.size(a, a_axis), self.size(b, b_axis)
        if n is None or m != n * size:
            return False
        return self.pairs(a, a_axis, b, b_axis, np.repeat(np.arange(n), size), np.arange(m))

    def param(self, t, axis, role):
        s = self.space(t, axis)
        if s is not None:
            self.roles[s] = role

    def handle(self, t, axis):
        s = self.space(t, axis)
        if s is not None:
            self.handled.add(s)

    def approximate(self, t, axis):
        """Handle an axis whose channels are mixed by statistics (a norm's mean and
        variance): pruning it is allowed but is not equivalent to zeroing."""
        s = self.space(t, axis)
        if s is not None:
            self.handled.add(s)
            self.lossy.add(s)

    def tag(self, t, axis, tag):
        s = self.space(t, axis)
        if s is not None:
            self.tags[s] = tag

    def same_size(self, a, a_axis, b, b_axis, reason, factor=1):
        """Two axes that must shrink alike (b keeps `factor` times what a keeps), e.g. a
        dim read by Shape into a Reshape target."""
        sa, sb = self.space(a, a_axis), self.space(b, b_axis)
        if sa is not None and sb is not None:
            self.same.append((sa, sb, factor, reason))
            self.handled.update((sa, sb))

    def refuse(self, t, axis, reason):
        """Leave an axis unhandled, with the reason analyze will show."""
        s = self.space(t, axis)
        if s is not None:
            self.reasons[s] = reason

    def refuse_node(self, node, reason):
        """Refuse every axis of every input and output of a node."""
        for t in list(node.inputs) + list(node.outputs):
            for axis in range(self.ctx.rank(t) or 0):
                self.refuse(t, axis, reason)


class Rule:
    """Base class: one subclass per op family, registered for its op types."""

    ops: tuple = ()

    def couple(self, node, flow: Flow) -> None:
        raise NotImplementedError

    def shrink(self, node, ctx: Ctx, keep: dict) -> None:
        """Update attributes and shape constants; `keep` maps space -> kept indices."""

    def macs(self, node, ctx: Ctx) -> tuple:
        """(multiply-accumulates at the loaded shapes, factor spaces): the op's MACs
        scale with kept / size of each factor space, so a plan's MACs can be predicted
        exactly. (0, ()) for ops without MACs. Symbolic dims count as 1."""
        return 0, ()

    def data_axis(self, node) -> int | None:
        """The channel axis of input 0 that a weight (input 1) contracts, for the ops
        whose weight the statistics, compensation and recovery read (Conv, Gemm,
        MatMul); None for every other op."""
        return None


def volume(shape) -> int | None:
    """Elements of a shape (symbolic dims count as 1), or None for an unknown shape."""
    if shape is None:
        return None
    return int(np.prod([d if isinstance(d, int) else 1 for d in shape], dtype=np.int64))


def output_spaces(ctx: Ctx, t) -> list:
    """Every axis of a tensor as a space."""
    return [(t.name, a) for a in range(ctx.rank(t) or 0)]


def normalize_axis(axis, rank):
    return axis % rank if rank else axis


def broadcast(flow: Flow, inputs, out):
    """Numpy-style broadcasting: each input axis equal to the output axis is linked."""
    ctx = flow.ctx
    out_rank = ctx.rank(out)
    if out_rank is None:
        return
    for t in inputs:
        if t is None or not t.name:
            continue
        rank = ctx.rank(t)
        if rank is None:
            continue
        for k in range(rank):
            j = out_rank - rank + k
            d, o = ctx.dim(t, k), ctx.dim(out, j)
            if d == 1 and o != 1:
                flow.handle(t, k)
            elif isinstance(d, int) and d == o:
                flow.identity(t, k, out, j)


def shape_source(ctx, t, pos):
    """Where entry `pos` of a 1-D shape vector computed at run time comes from.

    Follows Cast, Identity, Unsqueeze, Squeeze, Concat, Gather, Slice and Mul by a
    constant back to a Shape node. Returns (tensor, axis, factor): the entry is `factor`
    times that dim; or None.
    """
    factor = 1
    for _ in range(64):
        if ctx.const(t) is not None or len(t.inputs) != 1:
            return None
        node = t.inputs[0]
        op, ins = node.op, node.inputs
        if op in ("Cast", "Identity", "Unsqueeze", "Squeeze"):
            if op in ("Unsqueeze", "Squeeze") and (ctx.rank(ins[0]) or 0) > 1:
                return None
            t = ins[0]
        elif op == "Concat":
            for part in ins:
                n = (ctx.shape(part) or (1,))[0] if ctx.rank(part) else 1
                if not isinstance(n, int):
                    return None
                if pos < n:
                    t = part
                    break
                pos -= n
            else:
                return None
        elif op == "Gather" and int(node.attrs.get("axis", 0)) == 0:
            idx = ctx.ints(ins[1])
            n = (ctx.shape(ins[0]) or (None,))[0]
            if idx is None or not isinstance(n, int) or pos >= len(idx):
                return None
            t, pos = ins[0], idx[pos] % n
        elif op == "Slice" and len(ins) >= 3:
            starts, steps = ctx.ints(ins[1]), ctx.ints(ins[4]) if len(ins) > 4 and ins[4].name else [1]
            n = (ctx.shape(ins[0]) or (None,))[0]
            if starts is None or steps != [1] or len(starts) != 1 or not isinstance(n, int):
                return None
            t, pos = ins[0], min(max(starts[0] + n if starts[0] < 0 else starts[0], 0), n) + pos
        elif op == "Reshape" and (ctx.rank(ins[0]) or 0) == 1:
            t = ins[0]
        elif op == "Where" and ctx.const(ins[2]) is None:  # Where(v == -1, ones, v)
            t = ins[2]
        elif op == "Mul":
            consts = [ctx.const(i) for i in ins]
            k = next((i for i in (0, 1) if consts[i] is not None and consts[i].size == 1), None)
            if k is None or ctx.const(ins[1 - k]) is not None:
                return None
            factor *= int(consts[k].reshape(-1)[0])
            t = ins[1 - k]
        elif op == "Shape":
            rank = ctx.rank(ins[0])
            if rank is None:
                return None
            start = int(node.attrs.get("start", 0))
            return ins[0], (start % (rank + 1) if start < 0 else start) + pos, factor
        else:
            return None
    return None
