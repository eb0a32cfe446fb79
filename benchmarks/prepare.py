"""Throughput and peak memory of `prepare amazon` against the naive reference, on one generated corpus.

Generates (once, cached under bench-out/) a large raw corpus in the 2018 format: seven paper domains,
gzip reviews + meta, review lines of realistic length (~450 bytes). Core users buy 5+ items; "drive-by"
users review once or twice and never survive the 5-core, like most users of the full Amazon dumps.
Each method runs in its own child process (peak RSS measured by the OS), in the same benchmark run:

  ours        unimp-bench prepare (2 worker processes, or --workers)
  ours_2x     ours on the same corpus plus as many again drive-by reviews that the k-core removes:
              its peak memory should stay close to `ours` (memory follows the surviving data)
  naive       benchmarks/naive_reference.py: json.loads per line into pandas, Python loops for k-core
  naive_2x    naive on the 2x corpus: its memory grows with the raw size
  inflate_twice  only inflating every review file twice (2 processes): the floor of any two-pass reader
  polars_quick   benchmarks/polars_quick_reference.py: polars' NDJSON reader on the four key fields and
                 the 5-core, nothing else (no validation, meta, texts, splits): the speed to beat
  polars_quick_texts  the same, also reading the two review texts and keeping them through the
                 5-core: the floor of any pipeline whose output holds the texts, as ours does
  ours_before    with --before-src SRC: `prepare amazon` from another checkout's src/ (e.g. a git
                 worktree of an earlier commit), the "faster than before" reference in the same run

Prints one JSON line per figure: wall seconds, CPU seconds (user + system, all processes of the run),
peak RSS of the largest process, also as bytes per raw review. Usage:
python benchmarks/prepare.py [--reviews 1000000] [--skip-naive] [--skip-2x] [--repeats 3]
    [--before-src ../wt-old/src]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from isal import isal_zlib

REPO = Path(__file__).resolve().parents[1]
DOMAINS = [
    "Baby",
    "Beauty",
    "Clothing_Shoes_and_Jewelry",
    "Grocery_and_Gourmet_Food",
    "Sports_and_Outdoors",
    "Toys_and_Games",
    "Office_Products",
]
WORDS = (
    "good great love quality price fits small large soft color perfect works nice cheap broke returned "
    "happy recommend again daughter son gift product size material easy use well made comfortable"
).split()


def _texts(rng: np.random.Generator, n: int, low: int, high: int) -> list[str]:
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(low, high)))) for _ in range(n)]


def _review_lines(rng, users: np.ndarray, items: np.ndarray, times: np.ndarray, texts, summaries) -> bytes:
    ratings = rng.integers(1, 6, size=len(users))
    text_pick = rng.integers(0, len(texts), size=len(users))
    lines = [
        f'{{"overall": {r}.0, "verified": true, "reviewTime": "01 1, 2016", "reviewerID": "A{u:012d}", '
        f'"asin": "B{i:09d}", "reviewerName": "Customer", "reviewText": "{texts[t]}", '
        f'"summary": "{summaries[t % len(summaries)]}", "unixReviewTime": {s}}}\n'
        for u, i, s, r, t in zip(
            users.tolist(), items.tolist(), times.tolist(), ratings.tolist(), text_pick.tolist()
        )
    ]
    return "".join(lines).encode()


def _gzip(payload: bytes) -> bytes:
    """gzip at zlib's default level 6, as the published dumps are (their inflate speed matches)."""
    packer = zlib.compressobj(6, zlib.DEFLATED, 31)
    return packer.compress(payload) + packer.flush()


def generate(
    folder: Path, reviews: int, drive_by_share: float, extra_drive_by: int, seed: int = 0, processes: int = 2
) -> None:
    """Write <Domain>.json.gz and meta_<Domain>.json.gz for the seven domains, `processes` domains at a
    time. Each domain has its own generator and its files are written atomically, so an interrupted
    run resumes at the domains whose files are missing (a large corpus takes tens of minutes)."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [
        d
        for d, domain in enumerate(DOMAINS)
        if not ((folder / f"{domain}.json.gz").exists() and (folder / f"meta_{domain}.json.gz").exists())
    ]
    jobs = [(folder, d, reviews, drive_by_share, extra_drive_by, seed) for d in missing]
    if processes <= 1 or len(jobs) <= 1:
        for job in jobs:
            _generate_domain(*job)
        return
    with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_generate_domain, *zip(*jobs)))


def _generate_domain(
    folder: Path, d: int, reviews: int, drive_by_share: float, extra_drive_by: int, seed: int
) -> None:
    domain = DOMAINS[d]
    texts_rng = np.random.default_rng(seed)
    texts, summaries = _texts(texts_rng, 20000, 40, 110), _texts(texts_rng, 500, 2, 6)
    per_domain = reviews // len(DOMAINS)
    rng = np.random.default_rng([seed, d])
    n_items = max(50, per_domain // 25)
    core = int(per_domain * (1 - drive_by_share))
    # core users: 5..30 purchases, items drawn with a popularity skew
    lengths = rng.integers(5, 31, size=core // 12 + 1)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), core) + 1]
    users = np.repeat(np.arange(len(lengths)) + d * 10_000_000, lengths)[:core]
    items = (rng.zipf(1.3, size=len(users)) % n_items) + d * 1_000_000
    drive = per_domain - len(users)
    drive_users = rng.integers(5_000_000, 9_000_000, size=drive) + d * 10_000_000
    drive_items = rng.integers(0, n_items * 3, size=drive) + d * 1_000_000  # many never-core items
    all_users = np.concatenate([users, drive_users])
    all_items = np.concatenate([items, drive_items])
    order = rng.permutation(len(all_users))
    times = rng.integers(1_100_000_000, 1_540_000_000, size=len(all_users))
    payload = _review_lines(rng, all_users[order], all_items[order], times, texts, summaries)
    if extra_drive_by:  # the same corpus plus reviews the k-core removes (own generator: base unchanged)
        extra_rng = np.random.default_rng([seed, d, 1])
        n = extra_drive_by // len(DOMAINS)
        payload += _review_lines(
            extra_rng,
            extra_rng.integers(10_000_000, 90_000_000, size=n) + d * 100_000_000,
            extra_rng.integers(0, n_items * 3, size=n) + d * 1_000_000,
            extra_rng.integers(1_100_000_000, 1_540_000_000, size=n),
            texts,
            summaries,
        )
    _write_atomic(folder / f"{domain}.json.gz", _gzip(payload))
    meta = [
        json.dumps(
            {
                "category": [domain, f"Sub {i % 17}"],
                "description": [texts[i % len(texts)]],
                "title": f"Product {i} {summaries[i % len(summaries)]}",
                "also_buy": [],
                "brand": f"Brand{i % 97}",
                "price": f"${(i % 500) / 7:.2f}" if i % 5 else "",
                "asin": f"B{d * 1_000_000 + i:09d}",
                "image": [f"https://images.example.invalid/{i}.jpg"],
            }
        )
        for i in range(n_items * 3)
    ]
    _write_atomic(folder / f"meta_{domain}.json.gz", _gzip(("\n".join(meta) + "\n").encode()))


def _write_atomic(path: Path, payload: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(payload)
    partial.replace(path)


def _inflate_once(path: str) -> int:
    inflater = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            total += len(inflater.decompress(block))
    return total


def _child(method: str, raw: Path, out: Path, workers: int) -> None:
    started = time.perf_counter()
    if method == "naive":
        sys.path.insert(0, str(REPO / "benchmarks"))
        import naive_reference

        total = 0
        for domain in DOMAINS:
            frame = naive_reference.prepare(raw / f"{domain}.json.gz", raw / f"meta_{domain}.json.gz", k=5)
            total += len(frame)
    elif method in ("polars_quick", "polars_quick_texts"):
        sys.path.insert(0, str(REPO / "benchmarks"))
        import polars_quick_reference

        total = polars_quick_reference.quick_prepare(raw, k=5, texts=method == "polars_quick_texts")
    elif method == "inflate_twice":  # the floor of a two-pass reader: inflate every review file twice
        paths = [str(raw / f"{domain}.json.gz") for domain in DOMAINS] * 2
        with ProcessPoolExecutor(2) as pool:
            total = sum(pool.map(_inflate_once, paths)) // 2
    else:
        from unimp_bench.data.api import prepare_amazon_dataset

        manifest = prepare_amazon_dataset(raw, out, k_core=5, workers=workers, overwrite=True)
        total = manifest["totals"]["interactions"]
    print(json.dumps({"seconds": time.perf_counter() - started, "surviving": total}))


def _measure(method: str, raw: Path, out: Path, workers: int, src: Path | None = None) -> dict:
    env = os.environ | ({"PYTHONPATH": str(src)} if src else {})
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", method, "--raw", str(raw), "--out", str(out)]
        + ["--workers", str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    _, status, usage = os.wait4(process.pid, 0)
    stdout = process.stdout.read()
    if status != 0:  # reported, and the other runs go on (a killed run is a finding at large sizes)
        signal_number = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        why = {9: "killed (SIGKILL: out of memory?)"}.get(signal_number, f"exit status {status}")
        return {
            "failed": why,
            "seconds": time.perf_counter() - started,
            "peak_rss_mib": usage.ru_maxrss / 1024,
        }
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss / 1024  # the largest process of the child's tree
    result["cpu_seconds"] = usage.ru_utime + usage.ru_stime  # the child and the workers it waited for
    return result


def _count_lines(path: Path) -> int:
    """Lines of a gzip file, inflated block by block: this process stays small, since each measured
    child is forked from it and a forked child's peak RSS starts at its parent's."""
    inflater = isal_zlib.decompressobj(16 + isal_zlib.MAX_WBITS)
    lines = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += inflater.decompress(block).count(b"\n")
    return lines


def _raw_reviews(folder: Path) -> int:
    return sum(_count_lines(folder / f"{d}.json.gz") for d in DOMAINS)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reviews", type=int, default=1_000_000)
    parser.add_argument("--drive-by-share", type=float, default=0.3)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-2x", action="store_true", help="no 2x corpus (ours_2x, naive_2x)")
    parser.add_argument("--skip-polars-quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3, help="runs of ours; the median is reported")
    parser.add_argument("--before-src", type=Path, help="src/ of an earlier checkout, run as ours_before")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of ours (and ours_before)")
    parser.add_argument("--child")
    parser.add_argument("--raw", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.raw, args.out, args.workers)
        return
    base = REPO / "bench-out" / f"prepare-{args.reviews}-{args.drive_by_share}"
    corpora = {"base": base / "raw"} | ({} if args.skip_2x else {"2x": base / "raw-2x"})
    for name, folder in corpora.items():
        if not all((folder / f"meta_{d}.json.gz").exists() for d in DOMAINS):
            started = time.perf_counter()
            # in a child process: the measured runs are forked from this one, and a forked child's
            # peak RSS starts at its parent's, which generating a corpus would inflate
            extra = args.reviews if name == "2x" else 0
            generator = multiprocessing.get_context("spawn").Process(
                target=generate, args=(folder, args.reviews, args.drive_by_share, extra)
            )
            generator.start()
            generator.join()
            if generator.exitcode != 0:
                raise SystemExit(f"generating {folder} failed")
            print(
                json.dumps(
                    {"figure": f"generate_{name}_seconds", "value": round(time.perf_counter() - started, 1)}
                )
            )
    counts = {name: _raw_reviews(folder) for name, folder in corpora.items()}
    runs = {"inflate_twice": ("inflate_twice", "base"), "ours": ("ours", "base")}
    runs |= {"ours_before": ("ours", "base")} if args.before_src else {}
    if not args.skip_polars_quick:
        runs |= {name: (name, "base") for name in ("polars_quick", "polars_quick_texts")}
    runs |= {} if args.skip_2x else {"ours_2x": ("ours", "2x")}
    if not args.skip_naive:
        runs |= {"naive": ("naive", "base")} | ({} if args.skip_2x else {"naive_2x": ("naive", "2x")})
    results = {}
    for label, (method, corpus) in runs.items():
        src = args.before_src.resolve() if label == "ours_before" else None
        repeats = [
            _measure(method, corpora[corpus], base / f"out-{label}", args.workers, src)
            for _ in range(args.repeats if method == "ours" else 1)
        ]
        result = sorted(repeats, key=lambda r: r["seconds"])[len(repeats) // 2]  # the median run
        if "failed" in result:
            print(json.dumps({"figure": f"{label}.failed", "value": result["failed"]}), flush=True)
            print(json.dumps({"figure": f"{label}.peak_rss_mib", "value": round(result["peak_rss_mib"], 1)}))
            continue
        results[label] = result
        figures = {
            "raw_reviews": counts[corpus],
            "seconds": round(result["seconds"], 2),
            "cpu_seconds": round(result["cpu_seconds"], 2),
            "reviews_per_second": round(counts[corpus] / result["seconds"]),
            "peak_rss_mib": round(result["peak_rss_mib"], 1),
            "peak_rss_bytes_per_raw_review": round(result["peak_rss_mib"] * 2**20 / counts[corpus], 1),
        }
        if method != "inflate_twice":
            figures["surviving_interactions"] = result["surviving"]
        for key, value in figures.items():
            print(json.dumps({"figure": f"{label}.{key}", "value": value}), flush=True)

    def ratio(name: str, numerator: float, denominator: float) -> None:
        print(json.dumps({"figure": name, "value": round(numerator / denominator, 2)}))

    if "ours" not in results:
        return
    ratio("ours_seconds_over_inflate_twice", results["ours"]["seconds"], results["inflate_twice"]["seconds"])
    for reference in ("polars_quick", "polars_quick_texts", "ours_before"):
        if reference in results:
            for unit in ("seconds", "cpu_seconds"):
                ratio(f"ours_{unit}_over_{reference}", results["ours"][unit], results[reference][unit])
            if results[reference]["surviving"] != results["ours"]["surviving"]:
                print(json.dumps({"note": f"{reference} keeps other rows (see surviving_interactions)"}))
    if "ours_2x" in results:
        ratio(
            "peak_rss_ratio_ours_2x_raw_over_1x",
            results["ours_2x"]["peak_rss_mib"],
            results["ours"]["peak_rss_mib"],
        )
    if "naive" in results:
        assert results["naive"]["surviving"] == results["ours"]["surviving"], "ours and naive disagree"
        ratio("speedup_vs_naive", results["naive"]["seconds"], results["ours"]["seconds"])
        ratio(
            "peak_rss_ratio_naive_over_ours",
            results["naive"]["peak_rss_mib"],
            results["ours"]["peak_rss_mib"],
        )
        if "naive_2x" not in results:
            return
        ratio("speedup_vs_naive_2x", results["naive_2x"]["seconds"], results["ours_2x"]["seconds"])
        ratio(
            "peak_rss_ratio_naive_2x_raw_over_1x",
            results["naive_2x"]["peak_rss_mib"],
            results["naive"]["peak_rss_mib"],
        )


if __name__ == "__main__":
    main()
