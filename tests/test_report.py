"""The HTML report (`leaderboard --html`): self-contained, with the tables and their intervals, the
paper's rows marked, charts, training curves, dataset statistics and contact sheets; and, in
headless Chromium, its tables and images render."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess

import pytest

from helpers import invoke
from unimp_bench.baselines.runner import run_baseline


@pytest.fixture(scope="module")
def report_inputs(synthetic_data, synthetic_examples, tmp_path_factory):
    """Results of two baselines (one with a contact sheet attached), a run folder's training log."""
    from PIL import Image

    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    run_baseline(
        "pop",
        "recommendation",
        synthetic_data,
        results,
        ["valid", "test", "new_domain"],
        examples_dir=synthetic_examples,
    )  # new_domain: not applicable to pop (no training interaction of those items)
    run_baseline("bm25", "search", synthetic_data, results, ["test"], examples_dir=synthetic_examples)
    # a contact sheet as an image-generation eval links it from its result's config
    path = next(results.glob("bm25__search__test__*.json"))
    result = json.loads(path.read_text())
    sheet = results / "predictions" / "sheet.png"
    Image.new("RGB", (40, 20), (200, 30, 30)).save(sheet)
    result["provenance"]["config"]["contact_sheets"] = ["predictions/sheet.png"]
    path.write_text(json.dumps(result))
    run = root / "run"
    (run / "logs").mkdir(parents=True)
    records = [{"step": s, "loss": 5.0 / s, "loss/recommendation": 4.0 / s} for s in (1, 2, 3, 4)]
    (run / "logs" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    report = root / "report.html"
    invoke(
        "leaderboard", results, "--csv", root / "b.csv", "--html", report,
        "--run", run, "--data", synthetic_data,
    )  # fmt: skip
    return report


def test_the_report_is_one_self_contained_file(report_inputs):
    page = report_inputs.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|file:)""", page)  # nothing fetched
    assert page.count("<table>") >= 4  # recommendation valid/test, search test, a dataset
    # a not-applicable row says so in its cells, with the reason on the row
    assert "<td class=note>n/a</td>" in page and "not applicable" in page
    # every measured score with its 95% interval over examples
    assert re.search(r"<td>0\.\d{4} <span class=note>\[0\.\d{4}, 0\.\d{4}\]</span></td>", page)
    # the paper's rows: in the tables only, marked as reported on other data
    assert "UniMP (paper, reported on other data)" in page and "class=reported" in page
    assert page.count("<svg") >= 3  # charts per (task, metric) and the training curve
    assert "loss/recommendation" in page and "paper interactions" in page and "Beauty" in page
    assert page.count("data:image/png;base64,") == 1  # the contact sheet


def test_the_report_renders_in_headless_chromium(report_inputs, tmp_path):
    """Chromium loads the file, every image decodes, the tables are there, and the screenshot is not
    blank. Skipped with its reason where Chromium is absent, outside CI."""
    import numpy as np
    from PIL import Image

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        message = "headless Chromium is not installed (Debian package chromium)"
        if os.environ.get("UNIMP_BENCH_REQUIRE_SYSTEM"):
            pytest.fail(message)
        pytest.skip(message)
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}"]
    url = report_inputs.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    rendered = re.search(r'data-images="(\d+)" data-images-rendered="(\d+)" data-tables="(\d+)"', dom)
    assert rendered, dom[:500]
    images, decoded, tables = map(int, rendered.groups())
    assert images == decoded == 1 and tables >= 4
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1280,1600", url], capture_output=True, timeout=120
    )
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    assert pixels.shape == (1600, 1280) and pixels.std() > 10  # text and tables, not a blank page
