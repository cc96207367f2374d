"""Inference precisions: bf16 autocast islands, int8 graphs, the accuracy gate, ``auto``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from conftest import make_model, random_case  # noqa: E402
from sair_deploy import api, precision  # noqa: E402
from sair_deploy.backends.onnx_backend import OnnxBackend  # noqa: E402
from sair_deploy.backends.torch_backend import TorchBackend  # noqa: E402
from sair_deploy.errors import InputError  # noqa: E402
from sair_deploy.inpainter import Inpainter  # noqa: E402
from sair_deploy.manifest import load_manifest  # noqa: E402
from sair_deploy.model.checkpoint import save_checkpoint  # noqa: E402
from sair_deploy.model.lowp import Float32Islands  # noqa: E402
from sair_export import gate as gt  # noqa: E402
from sair_export import quantize  # noqa: E402
from sair_export.pipeline import export_checkpoint  # noqa: E402


def _photos(folder: Path, n: int, seed: int) -> Path:
    """``n`` smooth random 'photos' (blurred noise, so inpainting has structure to follow)."""
    from scipy.ndimage import gaussian_filter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img = gaussian_filter(rng.random((96, 96, 3)), sigma=(4, 4, 0))
        img = (img - img.min()) / (img.max() - img.min())
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"p{i}.png")
    return folder


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(model, path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("photos")
    return _photos(root / "calib", 3, 1), _photos(root / "heldout", 2, 2)


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory, checkpoint, folders, monkeypatch_module) -> tuple[Path, list[str]]:
    """The tiny model exported with --int8 (calibrated on one folder, gated on another), with
    the gate's hole limit loosened so a random model's int8 graphs are kept."""
    monkeypatch_module.setattr(gt, "MAX_HOLE_MAD", 1.0)
    monkeypatch_module.setattr(gt, "MAX_PSNR_DROP", 100.0)
    monkeypatch_module.setattr(gt, "MAX_SSIM_DROP", 1.0)
    out = tmp_path_factory.mktemp("exp") / "int8"
    logs: list[str] = []
    export_checkpoint(checkpoint, out, int8=True, calib=folders[0], gate_images=folders[1],
                      log=logs.append)
    return out, logs


def test_islands_keep_norms_coordinates_and_rgb_layer_in_float32():
    x = torch.randn(8, 16)
    w, rgb_w = torch.randn(16, 16), torch.randn(3, 16)
    rel, w_rel = torch.randn(8, 2), torch.randn(2, 16)
    with torch.autocast("cpu", torch.bfloat16), Float32Islands(rgb_w):
        h = F.linear(x, w)
        assert h.dtype == torch.bfloat16  # ordinary layers do run in bfloat16
        assert F.layer_norm(h, (16,)).dtype == torch.float32
        assert torch.softmax(h, -1).dtype == torch.float32
        assert F.group_norm(h.view(1, 8, 16), 2).dtype == torch.float32
        assert (rel @ w_rel).dtype == torch.float32  # coordinate part of a first layer
        assert torch.addmm(h.float(), rel, w_rel).dtype == torch.float32
        out = F.linear(h, rgb_w)
        assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.linear(h.float(), rgb_w))


def test_bf16_backend_close_to_fp32(model, monkeypatch):
    monkeypatch.setattr("sair_deploy.backends.torch_backend.cpu_supports_bf16", lambda: True)
    image, mask = random_case(40, 56, seed=5)
    outs = {}
    for p in ("fp32", "bf16"):
        b = TorchBackend(model, precision=p)
        assert b.precision == p
        inp = Inpainter(b, tile=32)
        inp.set_image(image, mask)
        outs[p] = inp.inpaint(1.0, dtype=np.float32)
    diff = np.abs(outs["fp32"] - outs["bf16"])
    assert 0 < diff[mask].mean() < 0.02  # it did run in bfloat16, and stayed close
    np.testing.assert_array_equal(outs["bf16"][~mask], image[~mask])


def test_bf16_refused_without_bf16_units(model, monkeypatch):
    monkeypatch.setenv("SAIR_NO_BF16", "1")
    assert not precision.cpu_supports_bf16()
    with pytest.raises(InputError, match="avx512_bf16 or amx_bf16"):
        TorchBackend(model, precision="bf16")


def test_auto_picks_only_a_passed_gate():
    passed, failed = {"bf16": {"passed": True}}, {"bf16": {"passed": False}}
    assert precision.pick_precision("auto", "torch", ("bf16",), passed) == "bf16"
    assert precision.pick_precision("auto", "torch", ("bf16",), failed) == "fp32"
    assert precision.pick_precision("auto", "torch", (), passed) == "fp32"  # CPU lacks bf16
    assert precision.pick_precision("auto", "onnx", ("int8",), {"int8": {"passed": True}}) == "int8"
    assert precision.pick_precision("auto", "onnx", ("int8",), None) == "fp32"
    assert precision.pick_precision("bf16", "torch", (), None) == "bf16"  # explicit is explicit


def test_gate_verdict_says_by_how_much():
    ok = {"psnr_fp32": 20.0, "psnr": 19.95, "ssim_fp32": 0.8, "ssim": 0.799, "hole_mad": 0.5 / 255}
    bad = {"psnr_fp32": 20.0, "psnr": 19.7, "ssim_fp32": 0.8, "ssim": 0.79, "hole_mad": 2 / 255}
    assert gt.verdict({"0-20%": ok})["passed"]
    v = gt.verdict({"0-20%": ok, "20-40%": bad})
    assert not v["passed"] and len(v["failures"]) == 3
    assert "PSNR -0.300 dB" in v["failures"][0] and "over by 0.200" in v["failures"][0]
    assert "over by 0.0080" in v["failures"][1] and "over by 1.000/255" in v["failures"][2]


def test_checkpoint_gate_record_and_auto(checkpoint, tmp_path, monkeypatch):
    ck = tmp_path / "c.safetensors"
    ck.write_bytes(checkpoint.read_bytes())
    assert precision.checkpoint_gates(ck) == {}
    gt.record_in_checkpoint(ck, {"bf16": {"passed": True, "buckets": {}}})
    assert precision.checkpoint_gates(ck)["bf16"]["passed"]
    monkeypatch.setattr("sair_deploy.backends.torch_backend.cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    assert api.load_backend(ck, "torch", "cpu").precision == "bf16"
    assert api.load_backend(checkpoint, "torch", "cpu").precision == "fp32"  # no gate recorded
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)
    assert api.load_backend(ck, "torch", "cpu").precision == "fp32"
    with pytest.raises(InputError, match="sair-export"):
        api.load_backend(ck, "torch", "cpu", precision="int8")
    # the weights were copied unchanged
    from safetensors.numpy import load_file
    a, b = load_file(str(ck)), load_file(str(checkpoint))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_int8_export_graphs_manifest_and_auto(int8_export, model):
    out, logs = int8_export
    m = load_manifest(out)
    assert m["precision_gate"]["int8"]["passed"]
    assert set(m["precision_gate"]["int8"]["buckets"]) == {"0-20%", "20-40%", "40-60%"}
    assert any(line.startswith("gate int8") for line in logs)
    for name, g in m["graphs"].items():
        if name not in ("semantic", "tile", "query", "query_holes"):  # no weights to quantize
            assert g["files"]["int8"] == g["files"]["fp32"], name
            continue
        assert g["files"]["int8"] == [f"{name}.int8.onnx"]
        ops = {n.op_type for n in onnx.load(str(out / g["files"]["int8"][0])).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, name
    # coordinate products and the RGB layer are not quantized
    q = onnx.load(str(out / "query.int8.onnx"))
    dq_out = {n.output[0] for n in q.graph.node if n.op_type == "DequantizeLinear"}
    products = [n for n in q.graph.node if n.op_type in quantize.QUANT_OPS]
    rgb_weight = model.air.mlp.linears[-1].weight.shape
    inits = {i.name: tuple(i.dims) for i in q.graph.initializer}
    rgb = [n for n in products if any(inits.get(x) in (tuple(rgb_weight), tuple(rgb_weight)[::-1]) for x in n.input)]
    assert len(rgb) == 4  # once per neighbour, each with float32 inputs and weights
    assert not any(x in dq_out for n in rgb for x in n.input)
    fp32 = onnx.load(str(out / "query.onnx"))
    kept = quantize.kept_float32_nodes(quantize._name_nodes(fp32), ("rect",), True)
    # cell @ W_cell, and per neighbour rel @ W_rel and the output layer (the ensemble is
    # multiply-adds, not a product)
    assert len(kept) == 9
    quantized = [n for n in products if any(x in dq_out for x in n.input)]
    assert quantized and len(quantized) == len(products) - 9
    # the tile graph's encoder is int8, its last convolution (AIR's precompute, which the
    # semantic term's loop then adds to) float32, and so are the products of weights only (the
    # fold of SIR's output layer into AIR's semantic block, which the loop reads)
    t = onnx.load(str(out / "tile.int8.onnx"))
    dq_out = {n.output[0] for n in t.graph.node if n.op_type == "DequantizeLinear"}
    convs = [n for n in t.graph.node if n.op_type == "Conv"]
    assert any(x in dq_out for x in convs[0].input)
    assert not any(x in dq_out for x in convs[-1].input)
    scan = [n for n in t.graph.node if n.op_type == "Scan"]
    assert len(scan) == 1 and not [n for n in scan[0].attribute[0].g.node if "Quantize" in n.op_type]
    producer = {o: n for n in t.graph.node for o in n.output}
    reads = {x for n in scan[0].attribute[0].g.node for x in n.input}
    assert not [x for x in reads if x in producer and producer[x].op_type == "DequantizeLinear"]
    assert not [x for x in reads if x in producer and producer[x].op_type == "Transpose"
                and producer[x].input[0] in dq_out]
    # int8 runs, stays near float32, and auto takes it since its gate passed
    image, mask = random_case(48, 64, seed=9)
    res = {}
    for p in ("fp32", "int8", "auto"):
        b = OnnxBackend(out, device="cpu", precision=p)
        inp = Inpainter(b, tile=32)
        inp.set_image(image, mask)
        res[b.precision if p != "auto" else "auto"] = inp.inpaint(1.0, dtype=np.float32)
        if p == "auto":
            assert b.precision == "int8"
    assert np.abs(res["int8"] - res["fp32"])[mask].mean() < 0.05
    np.testing.assert_array_equal(res["auto"], res["int8"])
    with pytest.raises(InputError, match="torch backend"):
        OnnxBackend(out, device="cpu", precision="bf16")


def test_failing_gate_refuses_int8_unless_allowed(int8_export, checkpoint, folders, tmp_path,
                                                  monkeypatch):
    import shutil

    from sair_deploy import manifest as mf
    from sair_export.pipeline import _lower_precisions

    out = tmp_path / "refused"
    shutil.copytree(int8_export[0], out)
    m = load_manifest(out)
    for g in m["graphs"].values():
        g["files"].pop("int8")
    m.pop("precision_gate")
    for f in out.glob("*.int8.onnx"):
        f.unlink()
    monkeypatch.setattr(gt, "MAX_HOLE_MAD", 0.0)  # nothing passes
    msg = _lower_precisions(checkpoint, out, m, True, False, folders[0], folders[1], False,
                            lambda s: None)
    assert msg.startswith("int8 failed its accuracy gate (") and "over by" in msg
    assert "--allow-failed-gate" in msg
    assert not m["precision_gate"]["int8"]["passed"]  # recorded, so the manifest says why
    assert all("int8" not in g["files"] for g in m["graphs"].values())
    assert not list(out.glob("*.int8.onnx"))
    # --allow-failed-gate keeps the graphs, and auto still does not pick them
    assert _lower_precisions(checkpoint, out, m, True, False, folders[0], folders[1], True,
                             lambda s: None) is None
    mf.write_manifest(out, m)
    assert OnnxBackend(out, device="cpu", precision="auto").precision == "fp32"
    assert OnnxBackend(out, device="cpu", precision="int8").precision == "int8"
    # the calibration set may not be the held-out set
    with pytest.raises(InputError, match="overlaps the held-out"):
        _lower_precisions(checkpoint, out, m, True, False, folders[1], folders[1], False,
                          lambda s: None)


def test_cli_precision_errors_are_one_line(checkpoint, tmp_path):
    from sair_deploy.cli import cli

    image, mask = random_case(24, 32, seed=1)
    Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / "i.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "m.png")
    res = CliRunner().invoke(cli, [str(tmp_path / "i.png"), str(tmp_path / "m.png"), "--model",
                                   str(checkpoint), "--precision", "int8", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert res.output.strip().count("\n") == 0 and "sair-export" in res.output
    res = CliRunner().invoke(cli, [str(tmp_path / "i.png"), str(tmp_path / "m.png"), "--model",
                                   str(checkpoint), "--precision", "fp32", "-o", str(tmp_path / "o.png")])
    assert res.exit_code == 0 and "[torch, fp32]" in res.output


def test_torch_cpu_backend_keeps_freed_memory(monkeypatch):
    """glibc's malloc is told to serve large blocks from its heap (kept and reused when freed)
    instead of mapping fresh pages for each; unless the user set its thresholds; elsewhere
    nothing happens. Checked on the block itself: glibc flags a chunk it mapped with ``mmap``
    (bit 2 of the size word before it), and by default a 48 MB block, above its largest dynamic
    threshold (32 MB), is always mapped."""
    import platform
    import subprocess
    import sys

    from sair_deploy.backends.torch_backend import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    if not glibc:
        assert keep_freed_memory() is False
        return
    probe = """
import ctypes, sys
from sair_deploy.backends.torch_backend import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
p = libc.malloc(48 << 20)
print(bool(ctypes.c_size_t.from_address(p - ctypes.sizeof(ctypes.c_size_t)).value & 2))
libc.free(p)
"""
    mapped = {how: subprocess.run([sys.executable, "-c", probe, how], capture_output=True, text=True,
                                  check=True).stdout.split()[-1] for how in ("keep", "default")}
    assert mapped == {"keep": "False", "default": "True"}
