"""Put float16 precision into an ONNX graph itself (TensorRT's strongly typed networks need it).

Weights and activations become float16; what needs range or precision stays float32, with explicit
``Cast`` nodes at every boundary:

* normalisations, softmax, reductions and pooling (:data:`FP32_OPS`);
* coordinate and index arithmetic: every value computed only from the coordinate inputs (``coord``,
  ``grid``, ``cell``, ``centres``, ``pixel_cell``) or from shapes, and everything feeding an index
  (``Gather`` indices, ``Floor``, casts to integers). Such values never touch image features, so
  a forward "taint" from the feature inputs finds exactly the nodes that may run in float16.

Graph inputs and outputs stay float32 for the caller.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

FP32_OPS = frozenset({
    "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
    "LpNormalization", "Softmax", "LogSoftmax",
    "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "CumSum",
    "AveragePool", "GlobalAveragePool", "LpPool", "GlobalLpPool",
    "Pow", "Sqrt", "Reciprocal", "Exp", "Log",
    "Floor", "Ceil", "Round", "Range", "Resize", "ConstantOfShape", "RandomUniformLike",
    "Cast", "CastLike",
})
# Ops whose output type does not depend on their inputs' float type (no cast needed before them).
_TYPE_AGNOSTIC = frozenset({"Shape", "Size"})
# (op, input index) pairs that carry indices or shapes: their producers stay float32.
_INDEX_INPUTS = {"Gather": (1,), "GatherND": (1,), "GatherElements": (1,), "ScatterND": (1,),
                 "ScatterElements": (1,), "Floor": (0,), "Ceil": (0,), "Round": (0,)}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    g = model.graph
    types = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    types[node.output[0]] = a.t.data_type
                elif a.name in ("value_float", "value_floats"):
                    types[node.output[0]] = FLOAT
    return types


def _index_cone(nodes: list[onnx.NodeProto], types: dict[str, int]) -> set[str]:
    """Names of every tensor that (transitively) feeds an index: these stay float32."""
    producer = {o: n for n in nodes for o in n.output}
    todo = []
    for n in nodes:
        for i in _INDEX_INPUTS.get(n.op_type, ()):
            if i < len(n.input) and n.input[i]:
                todo.append(n.input[i])
        if n.op_type == "Cast":
            to = next((a.i for a in n.attribute if a.name == "to"), FLOAT)
            if to not in (FLOAT, HALF, TensorProto.DOUBLE, TensorProto.BFLOAT16):
                todo.append(n.input[0])
    cone: set[str] = set()
    while todo:
        t = todo.pop()
        if t in cone:
            continue
        cone.add(t)
        if t in producer and producer[t].op_type not in _TYPE_AGNOSTIC:  # shapes carry no values
            todo.extend(x for x in producer[t].input if x)
    return cone


def _outer_names(g: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from the graphs around it (ONNX's outer scope)."""
    inner = {i.name for i in g.input} | {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    return {x for n in g.node for x in n.input if x and x not in inner}


def _rename_inputs(g: onnx.GraphProto, old: str, new: str) -> None:
    for n in g.node:
        n.input[:] = [new if x == old else x for x in n.input]


def convert_to_fp16(model: onnx.ModelProto, coordinate_inputs: Iterable[str] = (),
                    fp32_ops: Iterable[str] = FP32_OPS) -> onnx.ModelProto:
    """A float16 copy of ``model`` (float32 inputs and outputs, float32 where listed above)."""
    model = onnx.shape_inference.infer_shapes(copy.deepcopy(model))
    g = model.graph
    fp32_ops = frozenset(fp32_ops)
    types = _elem_types(model)
    nodes = list(g.node)
    coordinate_inputs = set(coordinate_inputs)
    inits = {i.name: i for i in g.initializer}
    keep32 = _index_cone(nodes, types)

    # image features start at every input that is not a coordinate/plan input (8-bit images too,
    # from their first Cast to float on)
    tainted = {i.name for i in g.input if i.name not in coordinate_inputs}
    half: set[str] = set()  # tensors that are float16 after the rewrite
    casts: dict[tuple[str, int], str] = {}  # (tensor, to) -> name of its cast copy
    half_inits: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []

    def as_type(name: str, to: int) -> str:
        if name in inits and to == HALF:
            if name not in half_inits:
                arr = numpy_helper.to_array(inits[name]).astype(np.float16)
                half_inits[name] = name + "__fp16"
                g.initializer.append(numpy_helper.from_array(arr, half_inits[name]))
            return half_inits[name]
        key = (name, to)
        if key not in casts:
            casts[key] = f"{name}__{'fp16' if to == HALF else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [casts[key]], to=to,
                                              name=f"cast_{casts[key]}"))
        return casts[key]

    for node in nodes:
        if any(a.type == onnx.AttributeProto.GRAPH for a in node.attribute):
            # a loop (the tile's semantic term in bands) stays float32: its inputs and the values
            # its body reads from this graph by name are cast back for it
            node.input[:] = [as_type(x, FLOAT) if x in half else x for x in node.input]
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    for x in _outer_names(a.g) & half:
                        _rename_inputs(a.g, x, as_type(x, FLOAT))
            new_nodes.append(node)
            continue
        float_in = [i for i, x in enumerate(node.input) if x and types.get(x) == FLOAT]
        float_out = [o for o in node.output if types.get(o) == FLOAT]
        is_tainted = bool(float_out) and any(x in tainted for x in node.input if x)
        if is_tainted:
            tainted.update(float_out)
        run_half = (is_tainted and node.op_type not in fp32_ops
                    and not any(o in keep32 for o in node.output))
        if run_half:
            for i in float_in:
                node.input[i] = as_type(node.input[i], HALF)
            half.update(float_out)
        elif node.op_type not in _TYPE_AGNOSTIC:
            for i, x in enumerate(node.input):
                if x in half:
                    node.input[i] = as_type(x, FLOAT)
        new_nodes.append(node)

    # graph outputs stay float32: the last op writes OUT__fp16, a Cast restores OUT
    for out in g.output:
        if out.name in half:
            renamed = out.name + "__fp16out"
            for n in new_nodes:
                n.output[:] = [renamed if o == out.name else o for o in n.output]
                n.input[:] = [renamed if x == out.name else x for x in n.input]
            half.discard(out.name)
            half.add(renamed)
            new_nodes.append(helper.make_node("Cast", [renamed], [out.name], to=FLOAT,
                                              name=f"cast_{out.name}_out"))

    used = {x for n in new_nodes for x in n.input}
    used |= {x for n in new_nodes for a in n.attribute if a.type == onnx.AttributeProto.GRAPH
             for x in _outer_names(a.g)}
    kept_inits = [i for i in g.initializer if i.name in used or i.name in {o.name for o in g.output}]
    del g.initializer[:]
    g.initializer.extend(kept_inits)
    del g.node[:]
    g.node.extend(new_nodes)
    # types changed: drop intermediate value_info and infer again
    del g.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return model


def count_precisions(model: onnx.ModelProto) -> dict[str, int]:
    """How many compute nodes run in float16 vs float32 (for logs and tests)."""
    model = onnx.shape_inference.infer_shapes(model)
    types = _elem_types(model)
    out = {"float16": 0, "float32": 0}
    for n in model.graph.node:
        if n.op_type in ("Cast", "Constant", "Shape"):
            continue
        t = next((types.get(o) for o in n.output if types.get(o) in (FLOAT, HALF)), None)
        if t == HALF:
            out["float16"] += 1
        elif t == FLOAT:
            out["float32"] += 1
    return out
