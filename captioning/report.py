"""``captioning report RUN_DIR``: one self-contained HTML page per training run.

Made from the local logs only (``RUN_DIR/csv/metrics.csv`` and ``RUN_DIR/samples/``), so it works
for any past run, offline: learning curves (loss, BLEU, gradient norm, learning rate) as embedded
PNGs, and the last validation epoch's images with generated and reference captions.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.pyplot as plt  # noqa: E402

from captioning.data.images import READ_ERRORS  # noqa: E402
from captioning.files import write_text_atomic  # noqa: E402
from captioning.gallery import _STYLE, thumbnail_data_uri  # noqa: E402
from captioning.run_folders import LATEST  # noqa: E402

# (title, y label, metric keys, x axis)
PANELS = [
    ("Loss", "cross-entropy (nats/token)", ["train/loss", "val/loss"], "step"),
    ("BLEU (validation)", "BLEU", ["val/bleu1", "val/bleu2", "val/bleu3", "val/bleu4"], "epoch"),
    ("Bits per character (validation, language model)", "bits/char", ["val/bpc"], "epoch"),
    ("Gradient norm before clipping", "global L2 norm", ["train/grad_norm"], "step"),
    ("Learning rate", "lr", ["lr-AdamW", "lr-AdamW/pg1", "train/lr"], "step"),
]


def read_metrics(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """metric -> [(step, epoch, value)] by step, from a Lightning CSV log (one row per logging call).

    A resumed run logs again the steps between its checkpoint and the interruption: the later
    value of a metric at a step wins.
    """
    latest: dict[str, dict[float, tuple[float, float, float]]] = defaultdict(dict)
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            step, epoch = float(row.get("step") or 0), float(row.get("epoch") or 0)
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    latest[key][step] = (step, epoch, float(value))
    return {key: sorted(by_step.values()) for key, by_step in latest.items()}


def _plot(series: dict, title: str, ylabel: str, keys: list[str], x_axis: str) -> str | None:
    present = [k for k in keys if series.get(k)]
    if not present:
        return None
    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
    for key in present:
        points = series[key]
        xs = [p[0] if x_axis == "step" else p[1] for p in points]
        axes.plot(xs, [p[2] for p in points], marker="o" if len(points) < 30 else None, label=key)
    axes.set(title=title, xlabel=x_axis, ylabel=ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _sample_figure(sample: dict) -> str:
    refs = "".join(f"<li>{html.escape(r)}</li>" for r in sample["references"][:5])
    picture = '<div class="missing">image not stored</div>'
    if sample.get("image"):
        try:
            picture = f'<img src="{thumbnail_data_uri(sample["image"], 192)}" alt="">'
        except READ_ERRORS as error:
            picture = f'<div class="missing">image unavailable: {html.escape(str(error))}</div>'
    return (
        f"<figure>{picture}<figcaption><b>{html.escape(sample['generated'])}</b>"
        f"<small>references:</small><ol>{refs}</ol></figcaption></figure>\n"
    )


def report(run_dir: str) -> Path:
    """Write ``RUN_DIR/report.html`` (learning curves + caption gallery) and return its path.

    Args:
        run_dir: A training run's folder, e.g. ``runs/shapes/version_0`` (holds ``csv/metrics.csv``);
            ``runs/shapes`` is its newest run (``runs/shapes/latest``).
    """
    root = Path(run_dir)
    if not (root / "csv").is_dir() and (root / LATEST).is_dir():
        root = root / LATEST
    metrics = root / "csv" / "metrics.csv"
    if not metrics.is_file():
        raise FileNotFoundError(
            f"{metrics} not found: RUN_DIR must be a run folder written by `captioning fit` "
            "(e.g. runs/shapes/version_0, or runs/shapes for its newest run)"
        )
    series = read_metrics(metrics)
    plots = [(panel[0], uri) for panel in PANELS if (uri := _plot(series, *panel))]
    epochs = sorted((root / "samples").glob("epoch_*.jsonl"))
    samples = [json.loads(line) for line in epochs[-1].read_text().splitlines()] if epochs else []
    final = {k: v[-1][2] for k, v in series.items() if k.startswith(("val/bleu", "val/bpc", "val/ppl", "test/"))}
    summary = "".join(f"<tr><td>{html.escape(k)}</td><td>{v:.4f}</td></tr>" for k, v in sorted(final.items()))
    parts = [
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>Report: {html.escape(root.name)}</title>',
        f"<style>{_STYLE}.plots img {{ max-width: 100%; }} ol {{ font-size: .8rem; padding-left: 1.2rem; }}</style></head>\n",
        f"<body><h1>Training run: {html.escape(str(root))}</h1>\n",
        f"<h2>Final scores (last logged)</h2><table>{summary}</table>\n" if summary else "",
        '<h2>Learning curves</h2><div class="grid plots">',
        "".join(f'<img src="{uri}" alt="{html.escape(title)}">' for title, uri in plots),
        "</div>\n",
    ]
    if samples:
        parts += [f"<h2>Validation samples ({html.escape(epochs[-1].stem)})</h2>", '<div class="grid">']
        parts += [_sample_figure(s) for s in samples]
        parts.append("</div>\n")
    parts.append("</body></html>\n")
    path = root / "report.html"
    write_text_atomic(path, "".join(parts))
    return path
