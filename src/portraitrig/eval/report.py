"""Evaluation reports: ``metrics.json`` (all figures) and a self-contained ``report.html``
(summary tables, matplotlib histograms / per-item bars and best / median / worst image strips
real | generated | difference, all embedded as base64 PNG; no JavaScript).
"""
from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from portraitrig.io.atomic import write_json, write_text

# per-item metrics where larger is better (everything else: smaller is better)
HIGHER_IS_BETTER = {"psnr", "ssim", "psnr_masked", "ssim_masked", "identity_similarity"}
# preferred metric to rank items for the image strips, first present wins
RANKING = ("identity_distance", "ssim_masked", "ssim", "psnr", "expression_vertex_pct_iod",
           "expression_coef_mae", "jitter_pct_iod")


def png_data_uri(image: np.ndarray) -> str:
    """data: URI of an (H, W[, 3]) uint8 image as PNG."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_data_uri(fig) -> str:
    """data: URI of a matplotlib figure as PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    from PIL import Image

    im = Image.fromarray(np.asarray(image, np.uint8))
    w = max(1, round(im.width * height / im.height))
    return np.asarray(im.convert("RGB").resize((w, height), Image.BILINEAR))


def comparison_strip(generated: np.ndarray, reference: np.ndarray | None = None,
                     height: int = 160, gain: float = 3.0) -> np.ndarray:
    """(height, W, 3) uint8 strip: reference | generated | |difference| x gain (the difference
    needs the same size; the reference is resized to the generated image when it differs)."""
    g = _fit(generated, height)
    if reference is None:
        return g
    r = _fit(reference, height)
    if r.shape != g.shape:
        from PIL import Image

        r = np.asarray(Image.fromarray(r).resize((g.shape[1], g.shape[0]), Image.BILINEAR))
    diff = np.clip(np.abs(g.astype(np.int16) - r.astype(np.int16)) * gain, 0, 255).astype(np.uint8)
    sep = np.full((height, 4, 3), 255, np.uint8)
    return np.concatenate([r, sep, g, sep, diff], axis=1)


def pick_cases(items: list[dict], metric: str, k: int = 3) -> dict[str, list[dict]]:
    """best / median / worst ``k`` items by a per-item metric (items without it are left out)."""
    scored = [it for it in items if _finite(it.get("metrics", {}).get(metric))]
    if not scored:
        return {}
    rev = metric in HIGHER_IS_BETTER
    scored.sort(key=lambda it: it["metrics"][metric], reverse=rev)
    n, k = len(scored), min(k, len(scored))
    mid = max(0, n // 2 - k // 2)
    return {"best": scored[:k], "median": scored[mid:mid + k], "worst": scored[::-1][:k]}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _metric_plot(name: str, items: list[dict]) -> str | None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    pairs = [(str(it["id"]), it["metrics"][name]) for it in items if _finite(it.get("metrics", {}).get(name))]
    if not pairs:
        return None
    fig, ax = plt.subplots(figsize=(6, 2.6))
    values = np.array([v for _, v in pairs])
    if len(pairs) <= 30:
        ax.bar(range(len(pairs)), values, color="#4477aa")
        ax.set_xticks(range(len(pairs)), [i for i, _ in pairs], rotation=60, fontsize=7, ha="right")
        ax.set_ylabel(name)
    else:
        ax.hist(values, bins=min(40, max(10, len(values) // 5)), color="#4477aa")
        ax.set_xlabel(name)
        ax.set_ylabel("items")
    if name == "identity_distance":
        ax.axhline(0.6, color="#cc3311", lw=1) if len(pairs) <= 30 else ax.axvline(0.6, color="#cc3311", lw=1)
    ax.set_title(f"{name}  (mean {values.mean():.4g}, n={values.size})", fontsize=9)
    return figure_data_uri(fig)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if math.isinf(v) else f"{v:.4g}")
    return html.escape(str(v))


def _table(rows: list[list[Any]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _is_stats(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(x, dict) and "mean" in x for x in v.values())


def _summary_html(summary: dict) -> str:
    """Scalar figures in one table; every {metric: {mean, median, p90, n}} group in its own
    table; rig figures beside their floor."""
    scalars, groups = [], []

    def walk(d: dict, prefix: str):
        for k, v in d.items():
            if _is_stats(v):
                groups.append((prefix + k, v))
            elif isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif not isinstance(v, (list, tuple)):
                scalars.append([prefix + k, v])

    walk({k: v for k, v in summary.items() if k != "rig"}, "")
    parts = [_table(scalars, ["figure", "value"])]
    for name, stats in groups:
        parts.append(f"<h3>{html.escape(name)}</h3>")
        parts.append(_table([[k] + [v.get(c, "") for c in ("mean", "median", "p90", "n")] for k, v in stats.items()],
                            ["metric", "mean", "median", "p90", "n"]))
    rig = summary.get("rig")
    if isinstance(rig, dict) and _is_stats(rig.get("generated")):
        floor = rig.get("floor") or {}
        parts.append("<h3>rig consistency (generated vs floor = real images fitted twice)</h3>")
        parts.append(_table([[k, v["mean"], v.get("median", ""), floor.get(k, {}).get("mean", ""), v.get("n", "")]
                             for k, v in rig["generated"].items()],
                            ["metric", "mean", "median", "floor mean", "n"]))
    return "\n".join(parts)


CSS = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;
margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}
img{max-width:100%}h2{border-bottom:1px solid #ddd}.case{margin:.4em 0}.case span{font-size:12px}"""


def render_html(summary: dict, items: list[dict], load_image=None, title: str = "portraitrig evaluation",
                k: int = 3) -> str:
    """HTML text of a report. items: dicts with "id", "metrics" (name -> float) and optional
    "error", "generated", "reference" (paths); load_image(path) -> (H, W, 3) uint8 for the
    image strips (images are left out when it is None or fails)."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts.append("<h2 id='summary'>Summary</h2>")
    parts.append(_summary_html(summary))

    names = sorted({n for it in items for n, v in it.get("metrics", {}).items() if _finite(v)})
    if names:
        parts.append("<h2 id='per-item'>Per-item metrics</h2>")
        parts.append(_table([[it["id"]] + [it.get("metrics", {}).get(n, "") for n in names]
                             for it in items if not it.get("error")], ["item"] + names))
        parts.append("<h2 id='plots'>Distributions</h2>")
        for n in names:
            uri = _metric_plot(n, items)
            if uri:
                parts.append(f"<div><img alt='{html.escape(n)}' src='{uri}'></div>")

    ranking = next((m for m in RANKING if m in names), names[0] if names else None)
    if ranking and load_image is not None:
        cases = pick_cases(items, ranking, k)
        parts.append(f"<h2 id='cases'>Best, median and worst by {html.escape(ranking)}</h2>")
        parts.append("<p>Each strip: reference (real) | generated | |difference| x3.</p>")
        for group in ("best", "median", "worst"):
            parts.append(f"<h3>{group}</h3>")
            for it in cases.get(group, []):
                try:
                    ref = load_image(it["reference"]) if it.get("reference") else None
                    strip = comparison_strip(load_image(it["generated"]), ref)
                except Exception as exc:  # a broken file must not stop the report
                    parts.append(f"<div class='case'>{html.escape(str(it['id']))}: {html.escape(str(exc))}</div>")
                    continue
                parts.append(f"<div class='case'><img alt='{html.escape(str(it['id']))}' src='{png_data_uri(strip)}'>"
                             f"<br><span>{html.escape(str(it['id']))}: {ranking} = {_fmt(it['metrics'][ranking])}</span></div>")

    errors = [[it["id"], it["error"]] for it in items if it.get("error")]
    if errors:
        parts.append("<h2 id='errors'>Items with errors</h2>")
        parts.append(_table(errors, ["item", "error"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def _strict(o):
    """JSON-safe copy: numpy to Python, non-finite floats (nan, inf PSNR) to null."""
    if isinstance(o, dict):
        return {str(k): _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if isinstance(o, np.ndarray):
        return _strict(o.tolist())
    if isinstance(o, np.generic):
        o = o.item()
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return o


def write_report(out_dir: str | Path, summary: dict, items: list[dict], load_image=None,
                 title: str = "portraitrig evaluation", extra: dict | None = None) -> tuple[Path, Path]:
    """Write OUT/metrics.json ({"summary", "items", **extra}; non-finite numbers such as the
    PSNR of identical images are written as null) and OUT/report.html, atomically.
    Returns (json path, html path)."""
    out = Path(out_dir)
    jpath = write_json(out / "metrics.json", _strict({"format": "portraitrig.eval", "version": 1,
                                                      **(extra or {}), "summary": summary, "items": items}))
    hpath = write_text(out / "report.html", render_html(summary, items, load_image, title))
    return jpath, hpath


__all__ = ["HIGHER_IS_BETTER", "png_data_uri", "figure_data_uri", "comparison_strip", "pick_cases",
           "render_html", "write_report"]
