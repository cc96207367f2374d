"""A design experiment for issue 11: would ONNX Runtime's CPU query calls be faster if the exported
query graph read the tile's precompute as rows (channels last), as torch's CPU path does?

    python bench/rows_onnx.py                    # sair-b16 widths, random weights, 2 threads
    python bench/rows_onnx.py --config sair-small

Exports today's ``QueryGraph`` (channels first: a ``GatherElements`` of every channel's plane with
an index expanded over the channels, then ``W @ h`` products) and a rows variant written here
(the block as ``(1, h, w, C)``, each neighbour's whole rows gathered on the pixel axis, the MLP as
row products that ONNX Runtime fuses with bias and ReLU), checks both against torch, and times
one call of N scale-2 outputs from a 140x140 block in ONNX Runtime, interleaved, median of 7;
torch's own call (its rows path) on the same block is timed beside them.

Measured 2026-11-26 (Intel Xeon with AMX, 2 threads, a shared and noisy machine; three runs at
sair-b16 widths): rows / channels first was 0.78, 0.88 and 1.15x at 4096 queries per call, 0.79,
0.82 and 1.01x at 8192, and 0.71, 0.70 and 0.76x at 16384; the rows graph matched torch to 2e-8.
Only large calls gain reliably. Wired into the real graphs (the tile graph emitting rows; the
patch is not in the tree), the bundled ``sair-small`` model (128 wide, a residual's 3 base
channels riding along) got 1.2-1.3x *slower* at scale 2 end to end, in ONNX Runtime's 4096-query
calls, so the graphs' interface was not changed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from speed import random_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="sair-b16")
    ap.add_argument("--calls", type=int, nargs="+", default=[4096, 8192, 16384], help="queries per call")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    import torch
    import torch.nn.functional as F
    from torch.export import Dim

    from sair_deploy.model.graphs import QueryGraph, output_grid
    from sair_deploy.model.liif import grid_neighbours, scale_cell
    from sair_deploy.model.sair import SAIR
    from sair_export.onnx import export_graph, save_model

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cfg = random_config(args.config).replace(residual=False)
    model = SAIR(cfg).eval()
    hid = cfg.air.hidden

    class RowsQuery(QueryGraph):
        """``QueryGraph`` over a block given as rows ``(1, h, w, C)`` (no residual base)."""

        def forward(self, air_pre, rect):
            grid, ys, xs, cell = output_grid(rect, air_pre)
            size, origin = grid[:2], grid[2:].long()
            nb = grid_neighbours(ys, xs, size)
            _, _, w_rel, w_cell, _ = self.fast._air_first()
            lins = self.fast.model.air.mlp.linears
            cell_term = scale_cell(cell[0], size) @ w_cell.T
            _, h, w, c = air_pre.shape
            table = air_pre.reshape(h * w, c)
            kh, kw = ys.shape[0], xs.shape[0]
            out = None
            for iy in (0, 1):
                for ix in (0, 1):
                    idx = ((nb.rows[iy] - origin[0])[:, None] * w + (nb.cols[ix] - origin[1])[None, :]).reshape(-1)
                    rel_y = nb.rel_rows[iy][:, None].expand(-1, kw).reshape(-1, 1)
                    rel_x = nb.rel_cols[ix][None, :].expand(kh, -1).reshape(-1, 1)
                    x = (table.index_select(0, idx) + rel_y * w_rel[:, 0] + rel_x * w_rel[:, 1] + cell_term).relu()
                    for lin in lins[1:-1]:
                        x = F.linear(x, lin.weight, lin.bias).relu()
                    rgb = F.linear(x, lins[-1].weight) * nb.weight[2 * iy + ix][:, None]
                    out = rgb if out is None else out + rgb
            return (out + lins[-1].bias).clamp(0.0, 1.0).unsqueeze(0)

    tmp = tempfile.mkdtemp()
    cf, rows = QueryGraph(model).eval(), RowsQuery(model).eval()
    save_model(export_graph(cf, "query", cfg), f"{tmp}/cf.onnx")
    sample = (torch.rand(1, 20, 22, hid) - 0.5, torch.tensor([20, 23, 20, 26, 88, 88, 44, 44, 2, 2]))
    prog = torch.onnx.export(rows, sample, dynamo=True, opset_version=18, input_names=["air_pre", "rect"],
                             output_names=["rgb"], external_data=False, optimize=True,
                             dynamic_shapes={"air_pre": {1: Dim("h", min=2, max=65536), 2: Dim("w", min=2, max=65536)},
                                             "rect": None})
    del prog.model_proto.graph.value_info[:]
    onnx.save(prog.model_proto, f"{tmp}/rows.onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.log_severity_level = 3
    s_cf = ort.InferenceSession(f"{tmp}/cf.onnx", opts, providers=["CPUExecutionProvider"])
    s_rows = ort.InferenceSession(f"{tmp}/rows.onnx", opts, providers=["CPUExecutionProvider"])
    blk = np.random.default_rng(0).random((1, hid, 140, 140), dtype=np.float32) - 0.5
    blk_rows = np.ascontiguousarray(blk.transpose(0, 2, 3, 1))
    pre = torch.from_numpy(blk).contiguous(memory_format=torch.channels_last)
    print(f"{args.config} widths (hidden {hid}), random weights, {args.threads} threads, median of 7 (ms per call)\n")
    print("| queries per call | ORT channels first | ORT rows | rows / channels first | torch (rows path) | max diff rows vs torch |")
    print("|---|---|---|---|---|---|")
    for n in args.calls:
        r = np.array([20, 20 + n // 128, 20, 148, 1024, 1024, 512, 512, 0, 0], dtype=np.int64)
        feeds = {"cf": {"air_pre": blk, "rect": r}, "rows": {"air_pre": blk_rows, "rect": r}}
        with torch.inference_mode():
            ref = cf(pre, torch.from_numpy(r)).numpy()
        diff = float(np.abs(s_rows.run(None, feeds["rows"])[0] - ref).max())
        s_cf.run(None, feeds["cf"])
        ts = {"cf": [], "rows": [], "torch": []}
        for _ in range(7):
            for k, fn in (("cf", lambda: s_cf.run(None, feeds["cf"])), ("rows", lambda: s_rows.run(None, feeds["rows"])),
                          ("torch", lambda: cf(pre, torch.from_numpy(r)))):
                with torch.inference_mode():
                    t = time.perf_counter()
                    fn()
                    ts[k].append(1e3 * (time.perf_counter() - t))
        m = {k: float(np.median(v)) for k, v in ts.items()}
        print(f"| {n} | {m['cf']:.1f} | {m['rows']:.1f} | {m['rows'] / m['cf']:.2f}x | {m['torch']:.1f} | {diff:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
