"""A static, self-contained HTML report of a results folder (`leaderboard --html report.html`).

One file with no external requests: the comparison tables (each score with its 95% interval over
examples, or +- its standard error over seeds), one chart per (task, metric) with the methods side
by side, the splits grouped and error bars, the training curves of the run folders given, the
datasets' statistics next to the paper's Table 5, and the image-generation contact sheets. The
paper's reported rows appear in the tables only, marked as reported on other data. Charts are
inline SVG (matplotlib), images are data URIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import polars as pl

from unimp_bench import __version__
from unimp_bench.errors import UnimpError
from unimp_bench.fileio import write_bytes_atomic
from unimp_bench.leaderboard import MEASURED, NOT_COMPUTED, REPORTED, long_table, metric_order
from unimp_bench.results import find_results, read_result

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; white-space: normal; max-width: 16rem; }
tr.reported td { background: #fff7e0; font-style: italic; }
.note { color: #666; font-size: 0.85rem; } .charts { display: flex; flex-wrap: wrap; gap: 1rem; }
.charts figure { margin: 0; } figcaption { font-size: 0.8rem; color: #555; }
img.sheet { max-width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
"""
# after loading, the page records how many of its images decoded (read by the rendering test)
SCRIPT = """
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  document.body.dataset.images = images.length;
  document.body.dataset.imagesRendered = images.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.dataset.tables = document.querySelectorAll("table").length;
});
"""


def _cell(value, low=None, high=None, se=None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.4f}"
    if low is not None and high is not None:
        text += f" <span class=note>[{low:.4f}, {high:.4f}]</span>"
    elif se is not None:
        text += f" <span class=note>&plusmn; {se:.4f}</span>"
    return text


def _tables(long: pl.DataFrame) -> str:
    """One table per measured dataset, task and split; the paper's rows of the task and split below
    the measured ones, marked."""
    parts = []
    measured = long.filter(pl.col("source") == MEASURED)
    reported = long.filter(pl.col("source") == REPORTED)
    for dataset, task, split in measured.select("dataset", "task", "split").unique().sort(pl.all()).rows():
        rows = measured.filter(
            (pl.col("dataset") == dataset) & (pl.col("task") == task) & (pl.col("split") == split)
        )
        paper = reported.filter((pl.col("task") == task) & (pl.col("split") == split))
        metrics = sorted(rows["metric"].unique().to_list(), key=metric_order)
        head = "".join(f"<th>{html.escape(m)}</th>" for m in metrics)
        body = []
        for source, frame in ((MEASURED, rows), (REPORTED, paper)):
            for method in sorted(frame["method"].unique().to_list()):
                cells = {
                    r["metric"]: r for r in frame.filter(pl.col("method") == method).iter_rows(named=True)
                }
                note = next((r["note"] for r in cells.values() if r["note"]), "")
                css = " class=reported" if source == REPORTED else ""
                label = html.escape(method) + (
                    " (paper, reported on other data)" if source == REPORTED else ""
                )
                # a row with a note and no score says why, as the Markdown table does
                blank = "missing" if note.startswith(NOT_COMPUTED) else "n/a" if note else ""
                shown = [
                    _cell(*(cells[m][k] for k in ("value", "low", "high", "se"))) if m in cells else ""
                    for m in metrics
                ]
                values = "".join(
                    f"<td>{text}</td>" if text else f"<td class=note>{blank}</td>" if blank else "<td></td>"
                    for text in shown
                )
                title = f' title="{html.escape(note)}"' if note else ""
                body.append(f"<tr{css}{title}><td>{label}</td>{values}</tr>")
        parts.append(
            f"<h3>{html.escape(task)} / {html.escape(split)} "
            f"<span class=note>{html.escape(dataset)}</span></h3>"
            f"<table><tr><th>method</th>{head}</tr>{''.join(body)}</table>"
        )
    return "".join(parts)


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _charts(long: pl.DataFrame) -> str:
    """Per task and metric: the splits grouped, the methods side by side, 95% intervals (or seed
    standard errors) as error bars. Measured rows only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable
    measured = long.filter((pl.col("source") == MEASURED) & pl.col("value").is_not_null())
    figures = []
    for task, metric in measured.select("task", "metric").unique().sort(pl.all()).rows():
        if "@" in metric and not metric.endswith("@10"):
            continue  # ranking metrics: the @10 ones (the tables have every k)
        panel = measured.filter((pl.col("task") == task) & (pl.col("metric") == metric))
        splits = sorted(panel["split"].unique().to_list())
        methods = sorted(panel["method"].unique().to_list())
        figure, axis = plt.subplots(figsize=(max(4.0, 1.2 * len(splits) + 0.4 * len(methods)), 2.8))
        width = 0.8 / len(methods)
        for index, method in enumerate(methods):
            rows = {r["split"]: r for r in panel.filter(pl.col("method") == method).iter_rows(named=True)}
            xs, ys, below, above = [], [], [], []
            for position, split in enumerate(splits):
                row = rows.get(split)
                if row is None:
                    continue
                xs.append(position + index * width)
                ys.append(row["value"])
                if row["low"] is not None:
                    below.append(row["value"] - row["low"])
                    above.append(row["high"] - row["value"])
                else:
                    below.append(row["se"] or 0.0)
                    above.append(row["se"] or 0.0)
            axis.bar(xs, ys, width=width, label=method, yerr=[below, above], capsize=2)
        axis.set_xticks([p + 0.4 - width / 2 for p in range(len(splits))], splits, fontsize=8)
        axis.set_title(f"{task}: {metric}", fontsize=9)
        axis.legend(fontsize=6, loc="best")
        figures.append(
            f"<figure>{_svg(figure)}<figcaption>{html.escape(task)}: {html.escape(metric)}"
            "</figcaption></figure>"
        )
    return f"<div class=charts>{''.join(figures)}</div>"


def _training_curves(runs: list[Path]) -> str:
    import matplotlib.pyplot as plt

    parts = []
    for run in runs:
        log = run / "logs" / "train.jsonl"
        if not log.is_file():
            raise UnimpError(f"{run} has no logs/train.jsonl; pass a run folder of `unimp-bench train`")
        records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        losses = sorted({k for r in records for k in r if k == "loss" or k.startswith("loss/")})
        figure, axis = plt.subplots(figsize=(6, 3))
        for name in losses:
            points = [(r["step"], r[name]) for r in records if name in r]
            axis.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.2)
        axis.set_xlabel("optimizer step", fontsize=8)
        axis.set_title(run.name, fontsize=9)
        axis.legend(fontsize=6)
        parts.append(f"<figure>{_svg(figure)}<figcaption>{html.escape(str(run))}</figcaption></figure>")
    return f"<div class=charts>{''.join(parts)}</div>"


def _datasets(datasets: list[Path]) -> str:
    from unimp_bench.data.api import dataset_statistics

    parts = []
    for root in datasets:
        stats = dataset_statistics(root, with_paper=True)
        head = "<tr><th>domain</th><th>users</th><th>items</th><th>interactions</th><th>sparsity</th>"
        head += "<th>paper users</th><th>paper items</th><th>paper interactions</th></tr>"
        rows = []
        for entry in stats["domains"]:
            paper = entry.get("paper") or {}
            cells = [entry["users"], entry["items"], entry["interactions"]]
            ours = "".join(f"<td>{v:,}</td>" for v in cells) + f"<td>{entry['sparsity']:.5f}</td>"
            theirs = "".join(
                f"<td>{paper[k]:,}</td>" if paper.get(k) is not None else "<td></td>"
                for k in ("users", "items", "interactions")
            )
            rows.append(f"<tr><td>{html.escape(entry['domain'])}</td>{ours}{theirs}</tr>")
        parts.append(
            f"<h3>{html.escape(str(root))} <span class=note>content hash "
            f"{html.escape(str(stats['content_hash'])[:12])}</span></h3><table>{head}{''.join(rows)}</table>"
        )
    return "".join(parts)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _contact_sheets(folder: Path) -> str:
    parts = []
    for path in find_results(folder):
        result = read_result(path)
        sheets = (result.provenance.get("config") or {}).get("contact_sheets") or []
        for sheet in sheets:
            file = path.parent / sheet
            if file.is_file():
                parts.append(
                    f"<figure><img class=sheet alt='contact sheet' src='{_data_uri(file)}'>"
                    f"<figcaption>{html.escape(result.method)} / {html.escape(result.split)}: "
                    f"{html.escape(Path(sheet).name)}</figcaption></figure>"
                )
    return "".join(parts)


def write_report(
    results: Path, out: Path, runs: list[Path] | None = None, datasets: list[Path] | None = None
) -> Path:
    """The report of every result under `results` (with the paper's rows), written to `out`."""
    if out.suffix.lower() not in (".html", ".htm"):
        raise UnimpError(f"the report must be an .html file, got {out}")
    long = long_table(results, with_paper=True)
    sections = [
        ("Results", _tables(long)),
        ("Charts", _charts(long)),
        ("Training curves", _training_curves(runs or [])),
        ("Datasets (ours next to the paper's Table 5)", _datasets(datasets or [])),
        ("Image generation contact sheets", _contact_sheets(results)),
    ]
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections if content)
    measured = long.filter(pl.col("source") == MEASURED)
    page = (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>unimp-bench report</title>"
        f"<style>{STYLE}</style><script>{SCRIPT}</script></head><body>"
        f"<h1>unimp-bench report</h1><p class=note>unimp-bench {__version__}; {html.escape(str(results))}: "
        f"{measured.select('method', 'task', 'split', 'dataset').unique().height} measured results. Scores "
        "carry a 95% bootstrap interval over examples [low, high], or &plusmn; the standard error over "
        "seeds. Rows in italics are the UniMP paper's reported numbers, measured on its data, not ours; "
        "its BLEU is the unigram precision its code reports (our BLEU-1).</p>"
        f"{body}</body></html>"
    )
    write_bytes_atomic(out, page.encode("utf-8"))
    return out
