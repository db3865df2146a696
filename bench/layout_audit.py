"""Which 4-D activations did Inductor allocate NCHW in a channels-last model?

Reads Inductor's generated code (``TORCH_LOGS=output_code`` written to a log, or a saved output
code file) and lists, graph by graph, every 4-D buffer allocated with NCHW-contiguous strides
(C > 1, H * W > 1). In the DiffusionRig UNet, whose activations are channels-last, each one is a
layout break: a kernel writes it or reads it transposed, and a convolution or matmul copies it
back. bench/profile_edit.py measures what that costs.

    TORCH_LOGS=output_code python bench/profile_edit.py --variants b16 2> /tmp/code.log
    python bench/layout_audit.py /tmp/code.log
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ALLOC = re.compile(r"(buf\d+) = empty_strided_(?:cuda|cpu|xpu)\(\((\d+), (\d+), (\d+), (\d+)\), "
                   r"\((\d+), (\d+), (\d+), (\d+)\), torch\.(\w+)\)")
# Inductor's output-code log starts each graph's module with this header.
GRAPH_START = re.compile(r"^.*# AOT ID: ", re.M)  # log lines may carry a prefix


def nchw_buffers(code: str) -> list[dict]:
    """4-D buffers of ``code`` allocated with NCHW-contiguous strides (C > 1, H * W > 1)."""
    out = []
    for m in ALLOC.finditer(code):
        name = m.group(1)
        n, c, h, w, s0, s1, s2, s3 = (int(g) for g in m.groups()[1:9])
        if c > 1 and h * w > 1 and (s0, s1, s2, s3) == (c * h * w, h * w, w, 1):
            out.append({"buffer": name, "shape": [n, c, h, w], "dtype": m.group(10)})
    return out


def audit(text: str) -> list[dict]:
    """One record per generated graph module in ``text``: its 4-D allocations and the NCHW ones."""
    starts = [m.start() for m in GRAPH_START.finditer(text)] or [0]
    graphs = []
    for i, a in enumerate(starts):
        code = text[a: starts[i + 1] if i + 1 < len(starts) else len(text)]
        total = sum(1 for m in ALLOC.finditer(code))
        graphs.append({"graph": i, "allocations_4d": total, "nchw": nchw_buffers(code)})
    return graphs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("code", type=Path, help="Inductor output-code log or file")
    ap.add_argument("--json", type=Path, default=None, help="also write the records here")
    a = ap.parse_args(argv)
    try:
        text = a.code.read_text(errors="replace")
    except OSError as e:
        print(f"{a.code}: cannot read ({e.strerror})", file=sys.stderr)
        return 2
    graphs = audit(text)
    for g in graphs:
        print(f"graph {g['graph']}: {g['allocations_4d']} 4-D allocations, {len(g['nchw'])} NCHW")
        for b in g["nchw"]:
            print(f"  {b['buffer']} {tuple(b['shape'])} {b['dtype']}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(graphs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
