"""sair-export: ONNX graphs, float16 graphs, manifest, TensorRT plumbing, torch-free runtime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402

from sair_deploy.backends.onnx_backend import OnnxBackend  # noqa: E402
from sair_deploy.errors import InputError, ModelError  # noqa: E402
from sair_deploy.model.config import SAIRConfig  # noqa: E402
from sair_export import parity  # noqa: E402
from sair_export.cli import cli  # noqa: E402
from sair_deploy.manifest import load_manifest  # noqa: E402

from conftest import make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    """The shipped demo model's options (push-pull fill, residual AIR) at the tiny size."""
    return make_model(fill="pushpull", residual=True)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model) -> str:
    from sair_deploy.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny-pushpull.safetensors"
    save_checkpoint(model, path)
    return str(path)


@pytest.fixture(scope="module")
def export_run(tmp_path_factory, checkpoint, monkeypatch_module):
    """One CLI export (float32 + float16) shared by the tests, over an earlier export (so --force
    is exercised: the earlier one is replaced as a whole)."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "stale.txt").write_text("from an earlier run")
    res = CliRunner().invoke(cli, [checkpoint, "-o", str(out), "--fp16", "--force"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert not (out / "stale.txt").exists()
    return out, res.output


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def export_dir(export_run) -> Path:
    return export_run[0]


def test_cli_writes_graphs_and_manifest(export_run, model):
    out, output = export_run
    m = load_manifest(out)  # checks every hash
    assert set(m["graphs"]) == {"prepare", "semantic", "fill", "tile", "query", "query_holes",
                                "composite", "assemble"}
    for kept in ("fill", "prepare", "composite", "assemble"):  # no weights: float32 in both
        assert m["graphs"][kept]["files"]["fp16"] == m["graphs"][kept]["files"]["fp32"]
    assert m["opset"] == 18 and SAIRConfig.from_dict(m["config"]) == model.cfg
    assert m["runtime"]["tile"] > 0 and m["runtime"]["chunk"] > 0 and m["runtime"]["max_side"] > 0
    assert {"torch", "onnx", "onnxruntime"} <= set(m["versions"])
    q = m["graphs"]["query"]
    assert [i["name"] for i in q["inputs"]] == ["air_pre", "rect"]  # coordinates are made inside
    assert q["outputs"][0]["name"] == "rgb" and q["outputs"][0]["dtype"] == "float32"
    assert [i["dtype"] for i in m["graphs"]["prepare"]["inputs"]] == ["uint8", "int32", "int64"]
    assert [i["name"] for i in m["graphs"]["semantic"]["inputs"]] == ["image", "holes", "region"]
    assert m["graphs"]["composite"]["outputs"][0]["dtype"] == "uint8"
    assert not list(out.glob("*.data"))  # small models embed their weights
    assert os.stat(out / "query.onnx").st_mode & 0o044  # readable like any new file


def test_trt_without_tensorrt_is_an_error_in_one_line(export_run, checkpoint, tmp_path,
                                                     monkeypatch):
    out, _ = export_run
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    res = CliRunner().invoke(cli, [checkpoint, "-o", str(out), "--trt", "--force"])
    assert res.exit_code == 2 and res.output.startswith("error: --trt: TensorRT is not installed")
    assert len(res.output.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the export is untouched
    assert load_manifest(out)["trt"] is None


def test_graphs_are_opset18_without_gridsample(export_dir):
    for f in sorted(export_dir.glob("*.onnx")):
        model = onnx.load(str(f))
        onnx.checker.check_model(model)
        assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {18}, f.name
        ops = {n.op_type for n in model.graph.node}
        assert "GridSample" not in ops, f.name


def test_existing_output_needs_force(export_dir, checkpoint):
    before = (export_dir / "manifest.json").stat().st_mtime_ns
    res = CliRunner().invoke(cli, [checkpoint, "-o", str(export_dir)])
    assert res.exit_code == 2
    assert "already exists" in res.output and "--force" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert (export_dir / "manifest.json").stat().st_mtime_ns == before


def test_fp32_graphs_match_torch(export_dir, model):
    from sair_deploy.backends.base import Backend

    backend = OnnxBackend(export_dir, device="cpu", precision="fp32")
    assert isinstance(backend, Backend)
    assert backend.name == "onnx-cpu" and backend.config == model.cfg
    diffs = parity.graph_parity(model, backend, sizes=(1, 2))
    assert len(diffs) == 2 * 9  # 8 graphs, prepare has two outputs
    for d in diffs:
        assert d.max_abs <= 1e-4, d.line()


def test_fp32_graphs_at_edge_sizes(export_dir, model):
    """Sizes the samples did not use: CLIP's native grid, a 1x1 fill, a 4x4 tile, one query, one
    hole, a one-tile assembly."""
    from sair_deploy.model.graphs import PLAN_INPUTS, build_graphs
    from sair_export.onnx import air_channels, graph_io

    backend = OnnxBackend(export_dir, device="cpu", precision="fp32")
    graphs = build_graphs(model)
    g = torch.Generator().manual_seed(5)
    rnd = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    u8 = lambda *s: (rnd(*s) * 255).to(torch.uint8)  # noqa: E731
    i64 = lambda *v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    cfg = model.cfg
    air = rnd(1, 7, 7, air_channels(cfg))  # rows: channels last
    cases = [
        # no hole, the encoder's largest input from a larger image; one pixel, one hole
        ("semantic", (u8(1, 300, 260, 3), torch.tensor([78000], dtype=torch.int32), i64(0, 300, 0, 260, 14, 12))),
        ("semantic", (u8(1, 1, 1, 3), torch.tensor([0, 1], dtype=torch.int32), i64(0, 1, 0, 1, 1, 1))),
        ("prepare", (u8(1, 1, 1, 3), torch.tensor([0, 1], dtype=torch.int32), i64(0, 1, 0, 1, 1, 1))),
        ("prepare", (u8(1, 8, 12, 3), torch.tensor([45], dtype=torch.int32), i64(2, 5, 3, 9, 1, 1))),
        ("fill", (rnd(1, 3, 1, 1), torch.zeros(1, 1, 1, 1))),
        ("fill", (rnd(1, 3, 77, 300), (rnd(1, 1, 77, 300) > 0.4).float())),
        ("tile", (rnd(1, 3, 4, 4), torch.zeros(1, 1, 4, 4), rnd(1, cfg.sir.hidden, 1, 1),
                  i64(0, 1, 0, 1, 0, 3, 0, 4, 3, 4, 3, 4, 0, 0))),
        ("query", (air, i64(10, 11, 10, 11, 20, 20, 10, 10, 2, 2))),  # one output pixel
        ("query_holes", (air, torch.tensor([47, 100], dtype=torch.int32),
                         i64(0, 1, 10, 10, 10, 0, 0, 2, 2))),  # one hole
        ("composite", (u8(1, 2, 3, 3), torch.tensor([4, 6], dtype=torch.int32), rnd(1, 3), i64(0, 2, 0, 3, 1, 1))),
        ("composite", (u8(1, 4, 5, 3), torch.tensor([0, 5, 6], dtype=torch.int32), rnd(2, 3),  # a window
                       i64(1, 2, 2, 3, 1, 1))),
        ("assemble", (rnd(6, 3), i64(2, 3), i64(0, 2), i64(0, 3))),
    ]
    for name, args in cases:
        io = graph_io(name, cfg)
        names = [k for k in io.inputs if name != "tile" or k != "sem_pre" or cfg.use_semantic]
        with torch.inference_mode():
            ref = graphs[name](*args)
        ref = ref if isinstance(ref, tuple) else (ref,)
        got = backend.run(name, *[a.numpy() if k in PLAN_INPUTS else backend.upload(a.numpy())
                                  for k, a in zip(names, args)])
        got = got if isinstance(got, tuple) else (got,)
        for r, o in zip(ref, got):
            o = backend.download(o)
            if name == "tile" and cfg.use_semantic:  # whole bands of rows: 3 -> 8, never read
                o = parity.cut_banded_rows(o, r.shape[1])
            assert o.shape == tuple(r.shape), (name, o.shape, r.shape)
            assert np.abs(o.astype(np.float64) - r.numpy()).max() <= 1e-4, (name, args[0].shape)


def test_fp32_images_match_torch(export_dir, model):
    backend = OnnxBackend(export_dir, device="cpu", precision="fp32")
    for d in parity.image_parity(model, backend):
        assert d.ok and d.max_abs <= 1e-4, d.line()
        assert "(0% in" not in d.what, "every pixel clipped: the comparison says nothing"


def test_fp16_images_within_tolerance(export_dir, model):
    backend = OnnxBackend(export_dir, device="cpu", precision="fp16")
    diffs = parity.image_parity(model, backend)
    for d in diffs:
        assert d.mean_abs <= 1e-2 and d.max_abs <= 5e-2, d.line()
    for d in parity.graph_parity(model, backend, sizes=(1,)):
        assert np.isfinite(d.max_abs) and d.max_abs < 0.05, d.line()


def test_fp16_graph_keeps_sensitive_ops_in_float32(export_dir):
    from onnx import TensorProto

    float_io = {TensorProto.FLOAT, TensorProto.UINT8, TensorProto.INT32, TensorProto.INT64}
    for name in ("semantic", "tile", "query", "query_holes"):
        proto = onnx.shape_inference.infer_shapes(onnx.load(str(export_dir / f"{name}.fp16.onnx")))
        g = proto.graph
        types = {v.name: v.type.tensor_type.elem_type for v in list(g.value_info) + list(g.input) + list(g.output)}
        types.update({i.name: i.data_type for i in g.initializer})
        for v in list(g.input) + list(g.output):  # the float32 export's interface, unchanged
            assert v.type.tensor_type.elem_type in float_io, (name, v.name)
        assert any(i.data_type == TensorProto.FLOAT16 for i in g.initializer), name
        for n in g.node:
            if n.op_type in ("LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "Floor"):
                assert types.get(n.output[0]) == TensorProto.FLOAT, (name, n.op_type, n.name)
            if n.op_type == "Conv" and name == "tile":
                assert types.get(n.output[0]) == TensorProto.FLOAT16, (name, n.name)


def test_manifest_hash_check_detects_a_modified_file(export_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(export_dir, copy)
    OnnxBackend(copy, device="cpu")  # intact: loads
    with open(copy / "query.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelError, match="sha256") as err:
        OnnxBackend(copy, device="cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(ModelError, match="sha256"):
        load_manifest(copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelError, match="format version 99"):
        OnnxBackend(copy, device="cpu")
    with pytest.raises(ModelError, match="no manifest.json"):
        OnnxBackend(tmp_path, device="cpu")


def test_onnx_backend_runs_with_torch_unimportable(export_dir, model, tmp_path):
    """The ONNX Runtime path through the Inpainter with every torch import failing."""
    from sair_deploy.backends.torch_backend import TorchBackend
    from sair_deploy.inpainter import Inpainter

    image, mask = parity.synthetic_case(36, 28, seed=3)
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "mask.npy", mask)
    script = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        import numpy as np
        from sair_deploy.api import load_inpainter
        import sair_deploy.backends.trt_backend, sair_deploy.manifest  # torch-free too
        inp = load_inpainter({str(export_dir)!r}, backend="onnx", tile=16, chunk=50)
        b = inp.backend
        inp.set_image(np.load({str(tmp_path / 'image.npy')!r}), np.load({str(tmp_path / 'mask.npy')!r}))
        np.save({str(tmp_path / 'out.npy')!r}, inp.inpaint(1.5, dtype=np.float32))
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch was imported"
        print(b.name)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() in ("onnx-cpu", "onnx-cuda")
    ref = Inpainter(TorchBackend(model), tile=16, chunk=50)
    ref.set_image(image, mask)
    expected = ref.inpaint(1.5, dtype=np.float32)
    got = np.load(tmp_path / "out.npy")
    assert got.shape == expected.shape == (54, 42, 3)
    assert np.abs(got - expected).max() <= 1e-4


def test_models_past_2gb_keep_weights_in_one_external_file(export_dir, model, tmp_path, monkeypatch):
    import onnxruntime as ort

    import sair_export.onnx as ox

    monkeypatch.setattr(ox, "_PROTO_LIMIT", 0)  # pretend the query graph is over 2 GB
    proto = onnx.load(str(export_dir / "query.onnx"))
    for _ in range(2):  # a second write replaces the data file instead of appending to it
        assert ox.save_model(proto, tmp_path / "query.onnx") == ["query.onnx", "query.onnx.data"]
    assert len(proto.graph.initializer[0].raw_data) > 0  # the caller's proto keeps its weights
    weights = sum(len(i.raw_data) for i in proto.graph.initializer if len(i.raw_data) >= 1024)
    assert (tmp_path / "query.onnx.data").stat().st_size == weights
    assert sorted(p.name for p in tmp_path.iterdir()) == ["query.onnx", "query.onnx.data"]
    feeds = {k: v.numpy() for k, v in ox.sample_inputs("query", model.cfg, 1).items()}
    a = ort.InferenceSession(str(tmp_path / "query.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    b = ort.InferenceSession(str(export_dir / "query.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.array_equal(a[0], b[0])


def test_model_without_semantic_branch_exports(tmp_path):
    """The LIIF ablation's tile graph takes no ``sem_pre`` (zero fill, no residual)."""
    import onnxruntime as ort

    from sair_deploy.model.graphs import build_graphs
    from sair_export.onnx import export_graph, export_modules, graph_io, sample_inputs, save_model

    model = make_model(use_semantic=False)
    modules = export_modules(model)
    assert set(modules) == {"prepare", "tile", "query", "query_holes", "composite", "assemble"}
    save_model(export_graph(modules["tile"], "tile", model.cfg), tmp_path / "t.onnx")
    sess = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    assert names == ["image", "mask", "box"] == list(graph_io("tile", model.cfg).inputs)
    for size in (1, 2):
        feeds = sample_inputs("tile", model.cfg, size=size)
        with torch.no_grad():
            ref = build_graphs(model)["tile"](*[feeds[k] for k in names]).numpy()
        assert np.abs(sess.run(None, {k: feeds[k].numpy() for k in names})[0] - ref).max() <= 1e-4


def test_onion_fill_graph_exports(tmp_path):
    """The onion fill (pyramid + peel + relaxation loops unrolled) matches torch in ONNX Runtime,
    at sizes that are not powers of two and from one pixel up."""
    import onnxruntime as ort

    from sair_deploy.model.graphs import build_graphs
    from sair_export.onnx import export_graph, export_modules, save_model

    model = make_model(use_semantic=False, fill="onion", residual=True)
    modules = export_modules(model)
    save_model(export_graph(modules["fill"], "fill", model.cfg), tmp_path / "f.onnx")
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(2)
    for h, w in ((1, 1), (77, 300), (128, 96)):
        image, mask = torch.rand(1, 3, h, w, generator=g), (torch.rand(1, 1, h, w, generator=g) > 0.4).float()
        mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        with torch.no_grad():
            ref = build_graphs(model)["fill"](image, mask).numpy()
        got = sess.run(None, {"image": image.numpy(), "mask": mask.numpy()})[0]
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-4, (h, w)


# ---- TensorRT: what can be checked without TensorRT ---------------------------------------

def test_trt_profiles_cover_the_runtime_sizes(tiny_model):
    from sair_export.trt import profiles, value_profiles

    cfg = tiny_model.cfg
    runtime = {"tile": 512, "chunk": 1 << 20, "margin": 3, "max_side": 4096, "overlap": 36}
    p = profiles(cfg, runtime)
    assert set(p) == {"prepare", "semantic", "tile", "query", "query_holes", "composite", "assemble"}
    lo, opt, hi = p["prepare"]["image"]
    assert lo == (1, 1, 1, 3) and hi == (1, 4096, 4096, 3)
    assert p["tile"]["image"][2] == (1, 3, 4096, 4096)  # a tile reads the prepared region
    # a core and its margin, as rows; the rows rounded up to the semantic loop's whole bands
    assert p["query"]["air_pre"][2] == (1, 520, 518, cfg.air.hidden)
    assert p["query_holes"]["holes"][2] == (4096 * 4096 + 1,)  # every pixel, and the sentinel
    assert p["semantic"]["image"][2] == (1, 4096, 4096, 3)  # the encoder's input is made in the graph
    for graph in p.values():
        for lo, opt, hi in graph.values():
            assert all(a <= b <= c for a, b, c in zip(lo, opt, hi))
    v = value_profiles(cfg, runtime)
    for graph, plan in (("tile", "box"), ("query", "rect"), ("query_holes", "span"), ("assemble", "out_size"),
                        ("prepare", "region"), ("semantic", "region"), ("composite", "region")):
        lo, opt, hi = v[graph][plan]
        assert len(lo) == len(opt) == len(hi) and all(a <= b <= c for a, b, c in zip(lo, opt, hi))
    grid = v["semantic"]["region"][2][4]
    assert grid * 16 >= cfg.semantic.max_side
    assert p["tile"]["sem_pre"][2][2:] == (grid, grid)
    assert v["tile"]["box"][2][5] == 518 and v["tile"]["box"][2][1] == 4096 // 4
    pp = profiles(cfg.replace(fill="pushpull", residual=True), runtime)
    assert pp["fill"]["image"][2] == (1, 3, 4096, 4096) and pp["fill"]["mask"][0] == (1, 1, 4, 4)
    assert pp["query"]["air_pre"][2][3] == cfg.air.hidden + 3  # base colours ride along
    assert "fill" not in p
    nosem = profiles(cfg.replace(use_semantic=False), runtime)
    assert nosem["query"]["air_pre"][2] == (1, 518, 518, cfg.air.hidden)  # no loop, no extra rows
    assert "semantic" not in nosem and "sem_pre" not in nosem["tile"]


def test_engines_from_another_host_are_refused():
    from sair_deploy.backends.trt_backend import check_engine_host

    section = {"tensorrt_version": "10.13.0", "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    check_engine_host(section, "10.13.0", {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(ModelError, match="built with TensorRT 10.13.0, this is 11.4.0"):
        check_engine_host(section, "11.4.0", {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(ModelError, match="built for NVIDIA H100.*this GPU is NVIDIA L4"):
        check_engine_host(section, "10.13.0", {"gpu": "NVIDIA L4", "compute_capability": "8.9"})


def test_trt_backend_without_tensorrt_or_engines(export_dir, monkeypatch):
    from sair_deploy.backends.trt_backend import TrtBackend

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(InputError, match="needs TensorRT"):
        TrtBackend(export_dir)


@pytest.mark.gpu
def test_cuda_copies_round_trip():
    """The TensorRT backend's device buffers and copies (cuda-python; no TensorRT needed)."""
    from sair_deploy.backends.trt_backend import TrtUnavailable, gpu_info

    try:
        info = gpu_info()
    except TrtUnavailable as exc:
        pytest.skip(f"needs cuda-python and a CUDA GPU: {exc}")
    from sair_deploy.backends.trt_backend import CudaCopier, DeviceBuffer

    assert info["gpu"] and "." in info["compute_capability"]
    cp = CudaCopier()
    buf = DeviceBuffer(cp.cudart)
    for n in (10, 100_000, 7):
        a = np.random.default_rng(n).random((1, n, 3), dtype=np.float32)
        cp.to_device(buf, a)
        out = cp.to_host(buf, np.empty_like(a))
        cp.synchronize()
        assert np.array_equal(a, out)
    buf.free()


@pytest.mark.gpu
def test_onnx_runtime_cuda_matches_torch(export_dir, model):
    from sair_deploy.backends.onnx_backend import available_providers

    if "CUDAExecutionProvider" not in available_providers():
        pytest.skip("onnxruntime-gpu is not installed (no CUDAExecutionProvider)")
    for precision, limits in (("fp32", (1e-4, None)), ("fp16", (parity.FP16_MAX, parity.FP16_MEAN))):
        backend = OnnxBackend(export_dir, device="cuda", precision=precision)
        assert backend.name == "onnx-cuda"
        for d in parity.image_parity(model, backend, limits=limits):
            assert d.ok, d.line()


def _have_trt_gpu() -> str | None:
    try:
        from sair_export.trt import check_available

        check_available()
    except Exception as exc:  # missing module, no GPU, no cuda-python
        return str(exc)
    return None


@pytest.mark.gpu
def test_trt_engines_match_onnxruntime(checkpoint, model, tmp_path):
    reason = _have_trt_gpu()
    if reason:
        pytest.skip(f"TensorRT engines need TensorRT and a CUDA GPU: {reason}")
    from sair_deploy.backends.trt_backend import TrtBackend
    from sair_export.pipeline import export_checkpoint

    out = tmp_path / "trt"
    m = export_checkpoint(checkpoint, out, fp16=True, trt=True,
                          runtime={"tile": 64, "chunk": 4096}, log=lambda s: None)
    assert m["trt"]["engines"] and m["trt"]["gpu"] and m["trt"]["compute_capability"]
    backend = TrtBackend(out)
    for d in parity.image_parity(model, backend, tile=64, chunk=4096,
                                 limits=(parity.FP16_MAX, parity.FP16_MEAN)):
        assert d.ok, d.line()
    pytest.importorskip("polygraphy", reason="polygraphy is not installed")
    for d in parity.polygraphy_trt_vs_ort(out, m):
        assert d.ok, d.line()
