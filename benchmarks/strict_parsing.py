"""What exact parsing costs (issue 15). Prints one JSON line per figure:

- the meta index (pass A of prepare) against a bare byte-regex scan, the index before it had to agree
  with a full parse of each line;
- review pass 1 against the same reader without the check that ids came from JSON strings.

    .venv/bin/python benchmarks/strict_parsing.py [--items 200000] [--wanted-every 3] [--reviews 300000]

The corpus is written once into a temporary folder: 2018 JSON lines and the same records as 2014
Python literals (~900 bytes each, 10 related asins, a long description). `wanted` is every
`--wanted-every`-th item, as after reading a review file whose items are a fraction of the catalog.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

from unimp_bench.data import json_lines
from unimp_bench.data.meta import index_meta
from unimp_bench.data.raw_files import RawFile, StreamInfo, iter_line_chunks
from unimp_bench.data.rejects import RejectLog
from unimp_bench.data.reviews import read_review_keys

_REFERENCE = {
    "2018": re.compile(rb'"asin"\s*:\s*"([^"]*)"'),
    "2014": re.compile(rb"""['"]asin['"]\s*:\s*['"]([^'"]*)['"]"""),
}


def regex_scan(path: Path, release: str, wanted: set[str]) -> dict[str, int]:
    """The reference: first regex match per line, no parse (what the index did before)."""
    first: dict[str, int] = {}
    for first_line, chunk in iter_line_chunks(path, StreamInfo()):
        line, start = first_line, 0
        for match in _REFERENCE[release].finditer(chunk):
            line += chunk.count(b"\n", start, match.start())
            start = match.start()
            item = match.group(1).decode()
            if item in wanted:
                first.setdefault(item, line)
    return first


def timed(function) -> tuple[float, float, object]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = function()
    return time.process_time() - cpu, time.perf_counter() - wall, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--wanted-every", type=int, default=3)
    parser.add_argument("--reviews", type=int, default=300_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="meta-index-"))
    description = "A fine product with many words " * 20
    records = [
        {
            "asin": f"B{i:09d}",
            "title": f"thing {i}",
            "description": [description],
            "price": "$1.00",
            "category": ["A", "B"],
            "also_buy": [f"B{j:09d}" for j in range(i + 1, i + 11)],
            "imageURLHighRes": ["https://x/y.jpg"],
        }
        for i in range(args.items)
    ]
    files = {"2018": folder / "meta_X.json", "2014": folder / "meta_Y.json"}
    files["2018"].write_text("\n".join(json.dumps(r) for r in records) + "\n")
    files["2014"].write_text("\n".join(repr(r) for r in records) + "\n")
    wanted = {f"B{i:09d}" for i in range(0, args.items, args.wanted_every)}
    for release, path in files.items():
        raw = RawFile(path, "meta", release, "X")
        ref_cpu, ref_wall, reference = timed(lambda: regex_scan(path, release, wanted))  # noqa: B023
        cpu, wall, (index, _) = timed(lambda: index_meta(raw, wanted, RejectLog()))  # noqa: B023
        assert index == reference  # clean data: both find the same lines
        print(
            json.dumps(
                {
                    "figure": f"meta index {release}",
                    "lines": args.items,
                    "mb": round(path.stat().st_size / 1e6, 1),
                    "wanted": len(wanted),
                    "index_cpu_s": round(cpu, 2),
                    "regex_reference_cpu_s": round(ref_cpu, 2),
                    "cpu_ratio": round(cpu / ref_cpu, 2),
                    "wall_ratio": round(wall / ref_wall, 2),
                }
            )
        )

    review_figure(folder, args.reviews)


def review_figure(folder: Path, n: int) -> None:
    text = "lorem ipsum dolor sit amet " * 12
    path = folder / "X_5.json"
    with open(path, "w") as handle:
        for i in range(n):
            record = {"reviewerID": f"U{i % 50000}", "asin": f"B{i % 7000:07d}", "reviewText": text,
                      "overall": 4.0, "summary": "ok", "unixReviewTime": 1_400_000_000 + i}  # fmt: skip
            handle.write(json.dumps(record) + "\n")
    raw = RawFile(path, "reviews", "2018", "X")
    checked = json_lines.ids_are_strings
    runs = {"strict": [], "reference": []}
    for _ in range(3):  # alternate, to spread the machine's drift over both
        for label in runs:
            json_lines.ids_are_strings = checked if label == "strict" else (lambda *a: True)
            cpu, _, (keys, _) = timed(lambda: read_review_keys(raw, RejectLog()))  # noqa: B023
            runs[label].append(cpu)
            assert keys.height == n
    json_lines.ids_are_strings = checked
    best = {label: min(times) for label, times in runs.items()}
    figure = {"figure": "review pass 1", "lines": n, "mb": round(path.stat().st_size / 1e6, 1)}
    figure |= {f"{label}_cpu_s": round(value, 2) for label, value in best.items()}
    print(json.dumps(figure | {"cpu_ratio": round(best["strict"] / best["reference"], 2)}))


if __name__ == "__main__":
    main()
