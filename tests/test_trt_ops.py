"""The static TensorRT check (export/trt_ops.py): hand-made bad graphs are flagged, and every
graph the exporter writes (float32 and float16) passes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sair_export.trt_ops import check_onnx_for_tensorrt

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def _model(nodes, inputs, outputs, inits=(), opset=18, domains=()) -> onnx.ModelProto:
    """A small opset-18 model; ``inputs``/``outputs`` are (name, type, shape) triples."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]
                              + [helper.make_opsetid(d, 1) for d in domains])
    onnx.checker.check_model(model, full_check=True)  # valid ONNX: only TensorRT's rules fail
    return model


def _one(problems: list[str], *words: str) -> None:
    assert len(problems) == 1, problems
    for w in words:
        assert w in problems[0], problems


def test_good_graph_passes():
    nodes = [helper.make_node("Unsqueeze", ["x", "ax"], ["u"], name="unsq"),
             helper.make_node("Relu", ["u"], ["y"], name="relu")]
    model = _model(nodes, [("x", F32, [2, 3])], [("y", F32, [1, 2, 3])],
                   {"ax": np.array([0], np.int64)})
    assert check_onnx_for_tensorrt(model) == []


def test_unsupported_op_is_flagged():
    model = _model([helper.make_node("Det", ["x"], ["y"], name="det")],
                   [("x", F32, [3, 3])], [("y", F32, [])])
    _one(check_onnx_for_tensorrt(model), "'det'", "(Det)", "unsupported")
    custom = _model([helper.make_node("Foo", ["x"], ["y"], name="foo", domain="my.ops")],
                    [("x", F32, [3])], [("y", F32, [3])], domains=["my.ops"])
    assert any("'foo'" in p and "domain 'my.ops'" in p for p in check_onnx_for_tensorrt(custom))


def test_non_constant_axes_are_flagged():
    # axes computed at run time (from the input's shape), even through Identity of a constant
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=0, end=1, name="shape"),
             helper.make_node("Sub", ["s", "one"], ["axes"], name="sub"),
             helper.make_node("ReduceSum", ["x", "axes"], ["y"], name="rsum")]
    model = _model(nodes, [("x", F32, [2, 3])], [("y", F32, ["a", "b"])],
                   {"one": np.array([1], np.int64)})
    _one(check_onnx_for_tensorrt(model), "'rsum'", "(ReduceSum)", "axes", "computed")

    nodes = [helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0], np.int64))),
             helper.make_node("Identity", ["c"], ["ax"], name="id"),
             helper.make_node("Unsqueeze", ["x", "ax"], ["y"], name="unsq")]
    model = _model(nodes, [("x", F32, [2])], [("y", F32, [1, 2])])
    _one(check_onnx_for_tensorrt(model), "'unsq'", "(Unsqueeze)", "axes")
    # the same axes straight from the Constant node are fine, whichever attribute holds them
    nodes = [nodes[0], helper.make_node("Unsqueeze", ["x", "c"], ["y"], name="unsq")]
    assert check_onnx_for_tensorrt(_model(nodes, [("x", F32, [2])], [("y", F32, [1, 2])])) == []
    nodes = [helper.make_node("Constant", [], ["c"], value_ints=[0]),
             helper.make_node("Unsqueeze", ["x", "c"], ["y"], name="unsq")]
    assert check_onnx_for_tensorrt(_model(nodes, [("x", F32, [2])], [("y", F32, [1, 2])])) == []


def test_slice_axes_from_a_graph_input_are_flagged():
    nodes = [helper.make_node("Slice", ["x", "st", "en", "ax"], ["y"], name="sl")]
    model = _model(nodes, [("x", F32, [4, 4]), ("ax", TensorProto.INT64, [1])], [("y", F32, ["a", "b"])],
                   {"st": np.array([1], np.int64), "en": np.array([3], np.int64)})
    _one(check_onnx_for_tensorrt(model), "'sl'", "(Slice)", "axes", "'ax'")


@pytest.mark.parametrize("attrs, words", [
    (dict(mode="linear", coordinate_transformation_mode="half_pixel_symmetric"), ("half_pixel_symmetric",)),
    (dict(mode="linear", coordinate_transformation_mode="tf_crop_and_resize"), ("tf_crop_and_resize",)),
    (dict(mode="linear", antialias=1), ("antialias",)),
    (dict(mode="nearest", keep_aspect_ratio_policy="not_larger"), ("not_larger",)),
])
def test_unsupported_resize_modes_are_flagged(attrs, words):
    # keep_aspect_ratio_policy needs `sizes` (ONNX forbids it with scales); the others use scales
    size_in = "keep_aspect_ratio_policy" in attrs
    nodes = [helper.make_node("Resize", ["x", "", "", "sizes"] if size_in else ["x", "", "scales"],
                              ["y"], name="rs", **attrs)]
    model = _model(nodes, [("x", F32, [1, 1, 4, 4])], [("y", F32, ["a", "b", "c", "d"])],
                   {"scales": np.array([1, 1, 2, 2], np.float32),
                    "sizes": np.array([1, 1, 8, 8], np.int64)})
    _one(check_onnx_for_tensorrt(model), "'rs'", "(Resize)", *words)


def test_resize_axes_with_computed_scales():
    nodes = [helper.make_node("Identity", ["sc"], ["scales"], name="id"),
             helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", mode="linear", axes=[3, 2])]
    model = _model(nodes, [("x", F32, [1, 1, 4, 4])], [("y", F32, ["a", "b", "c", "d"])],
                   {"sc": np.array([2, 2], np.float32)})
    _one(check_onnx_for_tensorrt(model), "'rs'", "(Resize)", "axes=[3, 2]")


@pytest.mark.parametrize("attrs", [dict(mode="linear", coordinate_transformation_mode="half_pixel"),
                                   dict(mode="cubic", coordinate_transformation_mode="pytorch_half_pixel"),
                                   dict(mode="nearest", nearest_mode="floor")])
def test_supported_resize_passes(attrs):
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["y"], name="rs", **attrs)]
    model = _model(nodes, [("x", F16, [1, 1, 4, 4])], [("y", F16, [1, 1, 8, 8])],
                   {"scales": np.array([1, 1, 2, 2], np.float32)})
    assert check_onnx_for_tensorrt(model) == []


def test_wrong_types_are_flagged():
    # MatMul on integers: TensorRT lists only float types for it
    model = _model([helper.make_node("MatMul", ["a", "b"], ["y"], name="mm")],
                   [("a", TensorProto.INT32, [2, 2]), ("b", TensorProto.INT32, [2, 2])],
                   [("y", TensorProto.INT32, [2, 2])])
    problems = check_onnx_for_tensorrt(model)
    assert problems and all("'mm'" in p and "(MatMul)" in p and "INT32" in p for p in problems), problems
    # float64 anywhere in the math
    model = _model([helper.make_node("Add", ["a", "a"], ["y"], name="add")],
                   [("a", TensorProto.DOUBLE, [2])], [("y", TensorProto.DOUBLE, [2])])
    assert any("DOUBLE" in p for p in check_onnx_for_tensorrt(model))
    # the type comes from shape inference: Pow of an INT64 value made by Shape (valid ONNX,
    # but TensorRT's Pow is float only)
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Neg", ["s"], ["n"], name="neg"),
             helper.make_node("Pow", ["n", "two"], ["y"], name="pow")]
    model = _model(nodes, [("x", F32, [2, 3])], [("y", TensorProto.INT64, [2])],
                   {"two": np.array(2, np.int64)})
    _one(check_onnx_for_tensorrt(model), "'pow'", "(Pow)", "input 'n' is INT64", "output 'y' is INT64")


def test_uint8_only_at_the_network_boundary():
    to_u8 = helper.make_node("Cast", ["x"], ["y"], to=TensorProto.UINT8, name="to_u8")
    assert check_onnx_for_tensorrt(_model([to_u8], [("x", F32, [2])], [("y", TensorProto.UINT8, [2])])) == []
    nodes = [helper.make_node("Cast", ["x"], ["u"], to=TensorProto.UINT8, name="to_u8"),
             helper.make_node("Cast", ["u"], ["y"], to=F32, name="back")]
    _one(check_onnx_for_tensorrt(_model(nodes, [("x", F32, [2])], [("y", F32, [2])])),
         "'to_u8'", "UINT8")


def test_range_types_from_the_importer():
    nodes = [helper.make_node("Range", ["a", "b", "c"], ["y"], name="rng")]
    inits = {"a": np.array(0, np.float64), "b": np.array(4, np.float64), "c": np.array(1, np.float64)}
    _one(check_onnx_for_tensorrt(_model(nodes, [], [("y", TensorProto.DOUBLE, [4])], inits)),
         "'rng'", "(Range)", "DOUBLE")


def test_constant_values_are_checked():
    nodes = [helper.make_node("TopK", ["x", "k"], ["v", "i"], name="topk")]
    model = _model(nodes, [("x", F32, [5000])], [("v", F32, [4000]), ("i", TensorProto.INT64, [4000])],
                   {"k": np.array([4000], np.int64)})
    _one(check_onnx_for_tensorrt(model), "'topk'", "(TopK)", "K must be below 3840")
    nodes = [helper.make_node("Dropout", ["x", "", "train"], ["y"], name="drop")]
    model = _model(nodes, [("x", F32, [4]), ("train", TensorProto.BOOL, [])], [("y", F32, [4])])
    _one(check_onnx_for_tensorrt(model), "'drop'", "(Dropout)", "'train' is computed")


def test_scatternd_reduction_is_flagged():
    nodes = [helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="sc", reduction="add")]
    model = _model(nodes, [("x", F32, [4])], [("y", F32, [4])],
                   {"i": np.array([[1]], np.int64), "u": np.array([2.0], np.float32)})
    _one(check_onnx_for_tensorrt(model), "'sc'", "(ScatterND)", "reduction")


def test_subgraphs_are_checked():
    then = helper.make_graph([helper.make_node("Det", ["x"], ["t"], name="inner_det")], "then", [],
                             [helper.make_tensor_value_info("t", F32, [])])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["e"], name="inner_sum",
                                                keepdims=0)], "else", [],
                              [helper.make_tensor_value_info("e", F32, [])])
    nodes = [helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)]
    model = _model(nodes, [("cond", TensorProto.BOOL, []), ("x", F32, [3, 3])], [("y", F32, [])])
    _one(check_onnx_for_tensorrt(model), "branch/then_branch/inner_det", "(Det)")

    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"], name="keep"),
         helper.make_node("Shape", ["v_in"], ["s"], name="shape"),
         helper.make_node("Sub", ["s", "one"], ["ax"], name="sub"),
         helper.make_node("Unsqueeze", ["v_in", "ax"], ["u"], name="unsq"),
         helper.make_node("Squeeze", ["u", "ax"], ["v_out"], name="sq")], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", F32, [3])],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", F32, [3])])
    nodes = [helper.make_node("Loop", ["n", "", "x"], ["y"], name="loop", body=body)]
    model = _model(nodes, [("n", TensorProto.INT64, []), ("x", F32, [3])], [("y", F32, [3])],
                   {"one": np.array([1], np.int64)})  # an outer-scope initializer used in the body
    problems = check_onnx_for_tensorrt(model)
    assert len(problems) == 2 and all("loop/body/" in p for p in problems), problems
    assert "(Unsqueeze)" in problems[0] and "(Squeeze)" in problems[1]


def test_opset_out_of_range_is_flagged():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [("x", F32, [2])], [("y", F32, [2])],
                   opset=21)
    assert any("opset 21" in p for p in check_onnx_for_tensorrt(model))


# ---- the exporter's graphs -----------------------------------------------------------------

# Both precompute graphs (with and without the semantic branch), both classical fills and
# residual AIR's extra channels (residual needs a fill): every kind of graph export_all writes.
# The onion fill's graph unrolls a 12-level peel (thousands of nodes, minutes of CPU to trace),
# so that variant is `slow`; the bundled demo export below covers an onion fill in every run.
VARIANTS = [
    pytest.param(dict(), id="semantic"),
    pytest.param(dict(use_semantic=False, fill="pushpull"), id="nosemantic-pushpull"),
    pytest.param(dict(fill="onion", residual=True), id="semantic-onion-residual", marks=pytest.mark.slow),
]


def _with_fp16(protos: dict[str, onnx.ModelProto], cfg) -> dict[str, onnx.ModelProto]:
    """``protos`` plus their float16 versions, converted as export/pipeline.py does (it keeps
    the fill float32)."""
    from sair_export.fp16 import convert_to_fp16
    from sair_export.onnx import graph_io

    out = {}
    for name, proto in protos.items():
        out[f"{name}/fp32"] = proto
        if name != "fill":
            out[f"{name}/fp16"] = convert_to_fp16(proto, graph_io(name, cfg).coordinate_inputs)
    return out


@pytest.fixture(scope="module", params=VARIANTS)
def exported(request, tmp_path_factory) -> dict[str, onnx.ModelProto]:
    """Every graph export_all writes for one variant of the tiny model, float32 and float16,
    keyed ``graph/precision``; exported once per variant for the module."""
    pytest.importorskip("torch")
    from conftest import make_model
    from sair_export.onnx import export_all

    model = make_model(**request.param)
    protos = export_all(model, tmp_path_factory.mktemp("export"), log=lambda s: None)
    assert "tile" in protos and "query" in protos
    return _with_fp16(protos, model.cfg)


def test_every_exported_graph_passes(exported):
    """Whatever graphs the exporter produces, in both precisions, meet TensorRT's parser rules."""
    problems = {key: check_onnx_for_tensorrt(proto) for key, proto in exported.items()}
    assert {k: p for k, p in problems.items() if p} == {}
    ops = {n.op_type for proto in exported.values() for n in proto.graph.node}
    assert {"Conv", "Gather", "Cast"} <= ops  # the check really walked the model's graphs


def test_bundled_demo_export_passes():
    """The shipped ONNX export (onion fill, no semantic branch, residual AIR), and float16
    versions of its graphs."""
    from sair_deploy.api import DEFAULT_EXPORT
    from sair_deploy.manifest import load_manifest
    from sair_deploy.model.config import SAIRConfig

    manifest = load_manifest(DEFAULT_EXPORT)
    cfg = SAIRConfig.from_dict(manifest["config"])
    # the float32 graphs (TensorRT builds from them; the int8 ones are for ONNX Runtime's CPU)
    protos = {name: onnx.load(str(DEFAULT_EXPORT / g["files"]["fp32"][0]))
              for name, g in manifest["graphs"].items()}
    assert "fill" in protos and cfg.fill == "onion"
    problems = {key: check_onnx_for_tensorrt(proto) for key, proto in _with_fp16(protos, cfg).items()}
    assert {k: p for k, p in problems.items() if p} == {}


def test_trt_export_stops_on_a_graph_tensorrt_would_reject(tiny_checkpoint, tmp_path, monkeypatch):
    """sair-export --trt checks the graphs before TensorRT sees them and fails with one line
    naming the graph, node, op and reason, exit 3 (TensorRT's availability is stubbed: without it
    --trt stops earlier, exit 2, see test_export)."""
    from click.testing import CliRunner

    import sair_export.pipeline as pipeline
    import sair_export.trt as trt_mod
    from sair_export.cli import cli

    nodes = [helper.make_node("Shape", ["air_pre"], ["s"], start=0, end=1, name="shape"),
             helper.make_node("Sub", ["s", "one"], ["ax"], name="sub"),
             helper.make_node("ReduceMean", ["air_pre", "ax"], ["rgb"], name="mean_over_computed_axes")]
    bad = _model(nodes, [("air_pre", F32, [1, 35, "h", "w"])], [("rgb", F32, ["a", "b", "c", "d"])],
                 {"one": np.array([1], np.int64)})
    monkeypatch.setattr(pipeline, "export_all", lambda model, out, log=print: {"query": bad})
    def unreachable():
        raise AssertionError("TensorRT was reached with a graph it would reject")

    monkeypatch.setattr(trt_mod, "check_available", lambda: (None, {}))
    monkeypatch.setattr(trt_mod, "build_engine", lambda *a, **k: unreachable())
    res = CliRunner().invoke(cli, [tiny_checkpoint, "-o", str(tmp_path / "out"), "--trt"])
    assert res.exit_code == 3, res.output + repr(res.exception)
    err = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "query.onnx" in err[0], res.output
    assert "'mean_over_computed_axes' (ReduceMean)" in err[0] and "axes" in err[0], res.output
