"""Static check that TensorRT's ONNX parser will accept a graph, without TensorRT.

The table below restates, as data in our own words, the operator support matrix of TensorRT's
ONNX parser: ``docs/operators.md`` of github.com/onnx/onnx-tensorrt at the ``10.1-GA`` release
(commit 96e7811, "ONNX-TensorRT 10.1 GA release"), the newest 10.x matrix in the snapshot of
that repository available here (later 10.x matrices are not reflected).
For every operator it records whether it is supported, the element types it lists, and its
restrictions. A few restrictions that the matrix leaves out but the parser enforces come from
``onnxOpImporters.cpp`` of the same commit; those rows say so (Range's input types, ScatterND
rejecting any ``reduction`` attribute, Gather/Pad rejecting UINT8 data, Unsqueeze's axes). One
row is wider than the matrix for the same reason: the importer turns Resize's ``cubic`` mode into
TensorRT's cubic resize (CLIP's bicubic position-embedding resize in the semantic graph uses it).

Beyond the per-operator rows the matrix states three graph-wide rules, checked as well: opsets 9
to 20 of the default domain; UINT8 only as a network input or output; no operators from other
domains (those need plugins). DOUBLE is not in any row's type list, so float64 tensors fail the
per-op type check; INT64 is native in TensorRT 10 and accepted wherever a row lists it.

:func:`check_onnx_for_tensorrt` walks every node, including those of ``If``/``Loop``/``Scan``
bodies (and local functions, after inlining), infers element types with ONNX shape inference,
and traces inputs that must be build-time constants to initializers or ``Constant`` nodes (what
the parser imports as weights; anything computed, even ``Identity`` of a constant, is a tensor).
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

TENSORRT_VERSION = "10.1"
SOURCE = "onnx/onnx-tensorrt docs/operators.md @ 10.1-GA (96e7811)"
OPSET_RANGE = (9, 20)

# element type names as the matrix writes them
TYPE_NAMES = {
    TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16", TensorProto.BFLOAT16: "BF16",
    TensorProto.INT32: "INT32", TensorProto.INT64: "INT64", TensorProto.UINT8: "UINT8",
    TensorProto.BOOL: "BOOL", TensorProto.INT8: "INT8", TensorProto.INT4: "INT4",
    TensorProto.FLOAT8E4M3FN: "FP8", TensorProto.DOUBLE: "DOUBLE",
}


def _type_name(t: int) -> str:
    return TYPE_NAMES.get(t, TensorProto.DataType.Name(t))


F = frozenset({"FP32", "FP16", "BF16"})
FI = F | {"INT32", "INT64"}
FIB = FI | {"BOOL"}
BOOL = frozenset({"BOOL"})


class Context:
    """What a restriction may ask about the graph around a node (types, ranks, constants)."""

    def __init__(self, types: Mapping[str, int], ranks: Mapping[str, int],
                 constants: Mapping[str, TensorProto]):
        self.types, self.ranks, self.constants = types, ranks, constants

    def is_constant(self, name: str) -> bool:
        """True if ``name`` is an initializer or a ``Constant`` node's output (parser weights)."""
        return name in self.constants

    def value(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor; None if it is computed at run time or its data was
        not loaded (external data)."""
        t = self.constants.get(name)
        if t is None or t.data_location == TensorProto.EXTERNAL:
            return None
        return numpy_helper.to_array(t)


def _attr(node: onnx.NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _input(node: onnx.NodeProto, i: int) -> str:
    """Name of input ``i`` or '' when it is absent (ONNX marks skipped optional inputs by '')."""
    return node.input[i] if i < len(node.input) else ""


Check = Callable[[onnx.NodeProto, Context], "str | None"]


def const_input(i: int, what: str) -> Check:
    """Input ``i`` (when given) must be an initializer or a Constant node's output."""
    def check(node, ctx):
        name = _input(node, i)
        if name and not ctx.is_constant(name):
            return f"input {i} ({what}) must be an initializer or Constant, but {name!r} is computed"
    return check


def attr_in(name: str, allowed: Iterable, default) -> Check:
    """Attribute ``name`` (``default`` when absent) must be one of ``allowed``."""
    allowed = tuple(allowed)

    def check(node, ctx):
        v = _attr(node, name, default)
        v = _text(v) if isinstance(v, bytes) else v
        if v not in allowed:
            return f"{name}={v!r} is not supported (supported: {', '.join(map(str, allowed))})"
    return check


def attr_absent(*names: str) -> Check:
    """None of the attributes ``names`` may be present."""
    def check(node, ctx):
        present = [a.name for a in node.attribute if a.name in names]
        if present:
            return f"attribute {present[0]!r} is not supported"
    return check


def attr_all_ones(name: str) -> Check:
    """Attribute ``name`` must be absent, empty or all ones (dilations)."""
    def check(node, ctx):
        v = _attr(node, name, [])
        if any(x != 1 for x in v):
            return f"{name}={list(v)} is not supported (must be empty or all ones)"
    return check


def output_unused(i: int, what: str) -> Check:
    """Optional output ``i`` must not be requested."""
    def check(node, ctx):
        if i < len(node.output) and node.output[i]:
            return f"output {i} ({what}) is not supported"
    return check


def input_rank(i: int, ranks: Iterable[int], what: str) -> Check:
    """Input ``i`` must have one of ``ranks`` (checked when the rank is known)."""
    ranks = tuple(ranks)

    def check(node, ctx):
        r = ctx.ranks.get(_input(node, i))
        if r is not None and r not in ranks:
            return f"{what}; input {i} has rank {r}"
    return check


def const_value(i: int, ok: Callable[[np.ndarray], bool], what: str) -> Check:
    """Input ``i`` must be a constant whose value satisfies ``ok``."""
    def check(node, ctx):
        name = _input(node, i)
        if not name:
            return None
        if not ctx.is_constant(name):
            return f"input {i} must be an initializer or Constant ({what}), but {name!r} is computed"
        v = ctx.value(name)
        if v is None:
            return None  # a constant whose data stayed on disk: the parser will check its value
        if not ok(v):
            return f"{what}; got {v.tolist()}"
    return check


def resize_axes(node: onnx.NodeProto, ctx: Context) -> str | None:
    """Resize: with a computed ``scales`` input, ``axes`` must be 0..rank-1 in order."""
    scales = _input(node, 2)
    axes = _attr(node, "axes")
    if not scales or ctx.is_constant(scales) or axes is None:
        return None
    rank = ctx.ranks.get(_input(node, 0))
    if rank is not None and [a % rank for a in axes] == list(range(rank)):
        return None
    return f"axes={list(axes)} with a computed scales input: axes must be 0..rank-1 in order"


def if_branches(node: onnx.NodeProto, ctx: Context) -> str | None:
    """If: both branches' outputs have equal ranks and are distinct tensors."""
    then, other = _attr(node, "then_branch"), _attr(node, "else_branch")
    for a, b in zip(then.output, other.output):
        if a.name == b.name:
            return f"both branches output the same tensor {a.name!r}; they must have different names"
        ra, rb = _vi_rank(a), _vi_rank(b)
        if ra is not None and rb is not None and ra != rb:
            return f"branch outputs {a.name!r} and {b.name!r} have ranks {ra} and {rb}; they must match"
    return None


@dataclass(frozen=True)
class Op:
    """One row of the matrix: the element types TensorRT lists and the restrictions it states."""

    types: frozenset[str]
    checks: tuple[Check, ...] = ()
    # type variables (ONNX schema names) the type list applies to; default: the first input's
    typed: tuple[str, ...] = field(default=())


def _axes_const(i: int = 1) -> tuple[Check, ...]:
    return (const_input(i, "axes"),)


_NEAREST_MODES = ("floor", "ceil", "round_prefer_floor", "round_prefer_ceil")
_RESIZE_COORDS = ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric",
                  "align_corners")
_POOL = (input_rank(0, (4, 5), "only 2D or 3D pooling is supported"), attr_all_ones("dilations"))

SUPPORTED: dict[str, Op] = {
    **{op: Op(FI) for op in ("Abs", "Add", "ArgMax", "ArgMin", "Div", "Equal", "Greater",
                             "GreaterOrEqual", "IsNaN", "Less", "LessOrEqual", "Max", "Min", "Mod",
                             "Mul", "Neg", "Relu", "Shrink", "Sign", "Sub", "Sum",
                             "DepthToSpace", "SpaceToDepth")},
    **{op: Op(F) for op in ("Acos", "Acosh", "Asin", "Asinh", "Atan", "Atanh", "BatchNormalization",
                            "Ceil", "Celu", "Clip", "Conv", "ConvTranspose", "Cos", "Cosh", "Einsum",
                            "Elu", "Erf", "Exp", "Floor", "Gemm", "GlobalAveragePool",
                            "GlobalLpPool", "GlobalMaxPool", "GroupNormalization", "GRU",
                            "HardSigmoid", "HardSwish", "ImageScaler", "InstanceNormalization",
                            "IsInf", "LeakyRelu", "Log", "LogSoftmax", "LRN", "LpNormalization",
                            "MatMul", "MeanVarianceNormalization", "Pow", "PRelu", "Reciprocal",
                            "RNN", "Round", "ScaledTanh", "Scan", "Selu", "Sigmoid", "Sin", "Sinh",
                            "Softmax", "Softplus", "Softsign", "Sqrt", "Tan", "Tanh",
                            "ThresholdedRelu", "Upsample", "ParametricSoftplus", "LSTM")},
    **{op: Op(FIB) for op in ("Concat", "Expand", "Flatten", "GatherElements", "GatherND",
                              "Identity", "Reshape", "ReverseSequence", "Shape", "Size", "Split",
                              "Tile", "Transpose", "Trilu")},
    **{op: Op(BOOL) for op in ("And", "Not", "Or", "Xor")},
    **{op: Op(FI, _axes_const()) for op in ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                                            "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
                                            "ReduceSum", "ReduceSumSquare")},
    **{op: Op(F, typed=("T2",)) for op in ("RandomNormalLike", "RandomUniformLike")},
    **{op: Op(F) for op in ("RandomNormal", "RandomUniform")},
    # the importer rejects UINT8 data for Gather and Pad, which the type lists already exclude
    "Gather": Op(FIB),
    "Where": Op(FIB, typed=("T",)),  # the list is for the values, the condition is BOOL
    "AveragePool": Op(F, _POOL),
    "LpPool": Op(F, (attr_all_ones("dilations"),)),
    "MaxPool": Op(F, _POOL + (output_unused(1, "Indices"),)),
    "Cast": Op(FIB | {"UINT8"}, typed=("T1", "T2")),
    "CastLike": Op(FIB | {"UINT8"}, typed=("T1", "T2")),
    "Constant": Op(FIB, (attr_absent("sparse_value", "value_string", "value_strings"),)),
    "ConstantOfShape": Op(FIB, typed=("T2",)),  # the matrix's "INF64" read as INT64
    "CumSum": Op(F, (const_input(1, "axis"),)),
    "DeformConv": Op(frozenset({"FP32", "FP16"}),
                     (input_rank(0, (3, 4), "only 1D or 2D spatial input is supported"),)),
    "DequantizeLinear": Op(frozenset({"INT8", "FP8", "INT4"}),
                           (const_value(2, lambda v: not np.any(v), "x_zero_point must be zero"),)),
    "Dropout": Op(F, (const_value(2, lambda v: not np.any(v), "training_mode must be false"),)),
    "EyeLike": Op(FIB),
    "Gelu": Op(FI | {"INT8"}),
    "GridSample": Op(frozenset({"FP32", "FP16"}), (input_rank(0, (4,), "input must be 4D"),)),
    "Hardmax": Op(F),
    "If": Op(FIB, (if_branches,), typed=("V",)),
    "LayerNormalization": Op(F, (output_unused(1, "Mean"), output_unused(2, "InvStdDev"))),
    "Loop": Op(FIB, typed=("V",)),
    "Mean": Op(FI | {"FP8"}),
    "Mish": Op(frozenset({"FP32", "FP16"})),
    "NonMaxSuppression": Op(frozenset({"FP32", "FP16"})),
    "NonZero": Op(frozenset({"FP32", "FP16"})),
    "OneHot": Op(FIB, (const_input(1, "depth"),)),
    "Pad": Op(FI, (const_input(3, "axes"),)),
    "QuantizeLinear": Op(F, (const_value(2, lambda v: not np.any(v), "y_zero_point must be zero"),)),
    # the matrix lists FP16/BF16 too, but the importer takes only these (and ONNX has no FP16 Range)
    "Range": Op(frozenset({"FP32", "INT32", "INT64"})),
    # the matrix lists nearest and linear, but the importer of the same commit also maps cubic
    # (with cubic_coeff_a and exclude_outside) to TensorRT's cubic resize, so it is accepted
    "Resize": Op(F, (attr_in("mode", ("nearest", "linear", "cubic"), "nearest"),
                     attr_in("coordinate_transformation_mode", _RESIZE_COORDS, "half_pixel"),
                     attr_in("nearest_mode", _NEAREST_MODES, "round_prefer_floor"),
                     attr_in("keep_aspect_ratio_policy", ("stretch",), "stretch"),
                     attr_in("antialias", (0,), 0),
                     input_rank(0, range(1, 9), "the input cannot be a scalar"),
                     resize_axes)),
    "RoiAlign": Op(frozenset({"FP32", "FP16"})),
    "Scatter": Op(FI),
    "ScatterElements": Op(FI),
    "ScatterND": Op(FI, (attr_absent("reduction"),)),  # the importer rejects it even as "none"
    "Slice": Op(FIB, _axes_const(3)),
    "Squeeze": Op(FIB, _axes_const()),
    "TopK": Op(FI, (attr_in("sorted", (1,), 1),
                    const_value(1, lambda v: int(np.max(v)) < 3840, "K must be below 3840"))),
    "Unsqueeze": Op(FIB, _axes_const()),
}

UNSUPPORTED = frozenset({
    "AffineGrid", "Bernoulli", "BitShift", "BitwiseAnd", "BitwiseNot", "BitwiseOr", "BitwiseXor",
    "BlackmanWindow", "Col2Im", "CenterCropPad", "Compress", "ConcatFromSequence", "ConvInteger",
    "DFT", "Det", "DynamicQuantizeLinear", "HammingWindow", "HannWindow", "ImageDecoder",
    "MatMulInteger", "MaxRoiPool", "MaxUnpool", "MelWeightMatrix", "Multinomial",
    "NegativeLogLikelihoodLoss", "Optional", "OptionalGetElement", "OptionalHasElement",
    "QLinearConv", "QLinearMatMul", "RegexFullMatch", "STFT", "SequenceAt", "SequenceConstruct",
    "SequenceEmpty", "SequenceErase", "SequenceInsert", "SequenceLength", "SequenceMap",
    "SoftmaxCrossEntropyLoss", "SplitToSequence", "StringConcat", "StringNormalizer", "StringSplit",
    "TfIdfVectorizer", "Unique",
})

_DEFAULT_DOMAINS = ("", "ai.onnx")


def _vi_rank(vi: onnx.ValueInfoProto) -> int | None:
    t = vi.type.tensor_type
    return len(t.shape.dim) if vi.type.HasField("tensor_type") and t.HasField("shape") else None


def _vi_type(vi: onnx.ValueInfoProto) -> int | None:
    if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.elem_type:
        return None
    return vi.type.tensor_type.elem_type


def _constant_value(node: onnx.NodeProto) -> TensorProto | None:
    """A Constant node's value as a tensor (whichever attribute holds it), None for strings."""
    for a in node.attribute:
        if a.name == "value":
            return a.t
        dtype = {"value_float": np.float32, "value_floats": np.float32,
                 "value_int": np.int64, "value_ints": np.int64}.get(a.name)
        if dtype is not None:
            return numpy_helper.from_array(np.asarray(onnx.helper.get_attribute_value(a), dtype))
    return None


class _Checker:
    """Walks a model's graphs and collects one line per problem."""

    def __init__(self, opset: int):
        self.opset = opset
        self.problems: list[str] = []

    def graph(self, g: onnx.GraphProto, outer: Context | None, prefix: str,
              network_io: frozenset[str]) -> None:
        """Check every node of ``g``; a subgraph also sees its outer scope's names."""
        def scope(m):
            return m.new_child() if isinstance(m, ChainMap) else ChainMap()

        types = scope(outer.types if outer else None)
        ranks = scope(outer.ranks if outer else None)
        consts = scope(outer.constants if outer else None)
        for vi in list(g.input) + list(g.output) + list(g.value_info):
            if _vi_type(vi) is not None:
                types[vi.name] = _vi_type(vi)
            if _vi_rank(vi) is not None:
                ranks[vi.name] = _vi_rank(vi)
        for init in g.initializer:
            types[init.name], ranks[init.name], consts[init.name] = init.data_type, len(init.dims), init
            if init.data_type == TensorProto.UINT8:
                self.problems.append(f"initializer {prefix}{init.name!r}: UINT8 is only supported "
                                     "as a network input or output")
        for node in g.node:
            if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
                t = _constant_value(node)
                if t is not None:
                    consts[node.output[0]] = t
                    types.setdefault(node.output[0], t.data_type)
        ctx = Context(types, ranks, consts)
        for idx, node in enumerate(g.node):
            self.node(node, idx, ctx, prefix, network_io)
            for a in node.attribute:
                subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                for sub in subs:
                    self.graph(sub, ctx, f"{prefix}{self.label(node, idx)}/{a.name}/", frozenset())

    @staticmethod
    def label(node: onnx.NodeProto, idx: int) -> str:
        return node.name or f"#{idx}->{node.output[0] if node.output else ''}"

    def node(self, node: onnx.NodeProto, idx: int, ctx: Context, prefix: str,
             network_io: frozenset[str]) -> None:
        where = f"node {prefix + self.label(node, idx)!r} ({node.op_type})"

        def report(reason: str) -> None:
            self.problems.append(f"{where}: {reason}")

        for out in node.output:
            if out and ctx.types.get(out) == TensorProto.UINT8 and out not in network_io:
                report(f"output {out!r} is UINT8, which TensorRT supports only as a network input "
                       "or output")
        if node.domain not in _DEFAULT_DOMAINS:
            report(f"operator from domain {node.domain!r} is not in TensorRT's ONNX operator matrix "
                   "(it would need a plugin)")
            return
        op = SUPPORTED.get(node.op_type)
        if op is None:
            how = "marked unsupported in" if node.op_type in UNSUPPORTED else "not in"
            report(f"operator {how} TensorRT {TENSORRT_VERSION}'s ONNX operator matrix")
            return
        self.types(node, op, ctx, report)
        for check in op.checks:
            reason = check(node, ctx)
            if reason:
                report(reason)

    def types(self, node: onnx.NodeProto, op: Op, ctx: Context, report) -> None:
        """Every input/output bound to the row's type variable has a type the row lists."""
        try:
            schema = onnx.defs.get_schema(node.op_type, self.opset, "")
        except onnx.defs.SchemaError:
            report(f"no ONNX schema for this operator at opset {self.opset}")
            return
        params = {c.type_param_str for c in schema.type_constraints}
        typed = op.typed or next((p.type_str for p in list(schema.inputs) + list(schema.outputs)
                                  if p.type_str in params), None)
        if not typed:
            return
        bad = []
        for kind, names, formals in (("input", node.input, schema.inputs),
                                     ("output", node.output, schema.outputs)):
            for i, name in enumerate(names):
                if not name or not formals:
                    continue
                formal = formals[min(i, len(formals) - 1)]
                if i >= len(formals) and formal.option != onnx.defs.OpSchema.FormalParameterOption.Variadic:
                    continue
                if formal.type_str not in typed:
                    continue
                t = ctx.types.get(name)
                if t is None:
                    report(f"the type of {kind} {name!r} could not be inferred")
                elif _type_name(t) not in op.types:
                    bad.append(f"{kind} {name!r} is {_type_name(t)}")
        if bad:
            report(f"{', '.join(bad)}; TensorRT lists {', '.join(sorted(op.types))}")


def check_onnx_for_tensorrt(model: onnx.ModelProto) -> list[str]:
    """Problems TensorRT's ONNX parser would meet in ``model``, one line each (empty if none).

    Checks opset range, that each operator is in the matrix, its element types (inferred by ONNX
    shape inference), its restrictions, the UINT8 rule, inside If/Loop/Scan bodies too.
    """
    # inlining and shape inference return new protos: the caller's model is left as it was
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS), None)
    if opset is None or not OPSET_RANGE[0] <= opset <= OPSET_RANGE[1]:
        problems.append(f"model: opset {opset} of the default domain is outside TensorRT "
                        f"{TENSORRT_VERSION}'s supported range {OPSET_RANGE[0]}-{OPSET_RANGE[1]}")
        opset = min(max(opset or OPSET_RANGE[1], OPSET_RANGE[0]), OPSET_RANGE[1])
    try:
        model = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # inference failing is itself a finding; types stay declared-only
        problems.append(f"model: ONNX shape inference failed ({str(exc).splitlines()[0]})")
    checker = _Checker(opset)
    io = frozenset(v.name for v in list(model.graph.input) + list(model.graph.output))
    checker.graph(model.graph, None, "", io)
    return problems + checker.problems
