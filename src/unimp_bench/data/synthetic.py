"""The embedded synthetic corpus: a small Amazon-like world with planted, learnable structure.

Generative story (all draws from one seeded numpy Generator, so the same spec gives the same bytes):

1. Visual styles. There are `styles` (default 4) looks: a palette and a pattern (stripes, dots,
   checks, rings). Every item has one style, drawn uniformly. The style is painted into the item's PNG
   image and appears NOWHERE in its text (title, brand, category, description and price are drawn
   independently of it), so style preference is visible only to a model that looks at images.
2. Items. Each domain gets `items / len(domains)` products with a category (a fixed list per domain,
   drawn uniformly), a brand and an adjective (uniform, independent of style), a category-dependent
   log-normal price and a log-normal popularity weight. The image shows the category's glyph (circle,
   square, ...) in gray on the style's pattern, with per-item jitter of position and shade.
3. Users. Each user has a preferred style (uniform), a taste over categories (Dirichlet(0.7)), a home
   domain and, for `cross_domain_share` of users, a second domain.
4. Sequences. In each active domain a user buys 5 + Poisson(`mean_extra_length`) distinct items. The
   next category follows the domain's category transition matrix (next in the list with 0.55, the one
   after with 0.2, the rest uniformly) mixed 60/40 with the user's taste; within the category an item is
   drawn with weight popularity x exp(`style_affinity` x [item style == user style]). Timestamps grow by
   exponential gaps (mean 20 days) from a start in 2015-2017; the domains of a two-domain user interleave.
5. Ratings and reviews depend on the match: rating = round(3 + 1.4 x style match - 0.9 x mismatch +
   0.5 x [category taste above average] + N(0, 0.6)), clipped to 1..5; the review draws words from a
   positive or negative pool by rating and names the category; the summary follows the rating.
6. Raw quirks, so the real code paths run: prices as "$12.99" strings with some "" and some ranges, a
   few duplicate meta rows and a few repeated (user, item) reviews at a later time.

The corpus is written as 2018-format raw files (`<Domain>.json`, `meta_<Domain>.json`) plus
`images/<asin>.png`, then prepared by exactly the code that prepares real Amazon data.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CATEGORIES = {
    "Beauty": ["Lipstick", "Shampoo", "Perfume", "Nail Polish", "Face Cream"],
    "Sports": ["Running Shoes", "Yoga Mat", "Water Bottle", "Tennis Racket", "Cycling Gloves"],
    "Toys": ["Puzzle", "Action Figure", "Board Game", "Plush Toy", "Building Blocks"],
    "Office": ["Notebook", "Pen Set", "Desk Lamp", "Stapler", "File Folder"],
    "Baby": ["Stroller", "Baby Bottle", "Pacifier", "Crib Sheet", "Bib"],
    "Clothing": ["Sneakers", "T-Shirt", "Jacket", "Dress", "Hat"],
    "Grocery": ["Coffee", "Tea", "Pasta", "Olive Oil", "Chocolate"],
}
STYLES = [  # (name, background, foreground pattern colour)
    ("stripes", (214, 69, 65), (247, 202, 24)),
    ("dots", (44, 62, 140), (129, 207, 224)),
    ("checks", (30, 130, 76), (200, 247, 197)),
    ("rings", (102, 51, 153), (241, 169, 160)),
    ("waves", (40, 40, 40), (230, 126, 34)),
    ("grid", (236, 236, 236), (52, 73, 94)),
]
GLYPHS = ["circle", "square", "triangle", "diamond", "cross"]
ADJECTIVES = ["Classic", "Premium", "Essential", "Deluxe", "Everyday", "Pro", "Compact", "Signature"]
POSITIVE = "love great perfect excellent recommend beautiful works quality happy favorite nice sturdy".split()
NEGATIVE = "disappointed poor cheap returned broke ugly waste awful flimsy regret meh bad".split()
SUMMARIES = {1: "Very disappointing", 2: "Not for me", 3: "It is okay", 4: "Pretty good", 5: "Love it"}


@dataclass(frozen=True)
class SyntheticSpec:
    users: int = 600
    items: int = 240
    domains: tuple[str, ...] = ("Beauty", "Sports", "Toys", "Office")
    seed: int = 0
    styles: int = 4
    style_affinity: float = 2.5
    cross_domain_share: float = 0.3
    mean_extra_length: float = 5.0
    image_size: int = 64

    def __post_init__(self) -> None:
        from unimp_bench.errors import UnimpError

        if not self.domains:
            raise UnimpError("the synthetic corpus needs at least one domain")
        if self.users < 1 or self.items < 5 * len(self.domains):
            raise UnimpError("the synthetic corpus needs at least 1 user and 5 items per domain")
        if not 1 <= self.styles <= len(STYLES):
            raise UnimpError(f"styles must be between 1 and {len(STYLES)}")


def _categories(domain: str) -> list[str]:
    return CATEGORIES.get(domain, [f"{domain} Item {letter}" for letter in "ABCDE"])


def render_image(style: int, glyph: int, rng: np.random.Generator, size: int) -> bytes:
    """A PNG whose pattern and colours show the style and whose gray glyph shows the category."""
    _, background, pattern = STYLES[style]
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    step = max(4, size // 8)
    kind = STYLES[style][0]
    for k in range(0, size + step, step):
        if kind == "stripes":
            draw.rectangle([k, 0, k + step // 2 - 1, size], fill=pattern)
        elif kind == "dots":
            for j in range(0, size, step):
                draw.ellipse([k, j, k + step // 2, j + step // 2], fill=pattern)
        elif kind == "checks":
            for j in range(0, size, step):
                if (k // step + j // step) % 2:
                    draw.rectangle([k, j, k + step - 1, j + step - 1], fill=pattern)
        elif kind == "rings":
            draw.ellipse(
                [size // 2 - k, size // 2 - k, size // 2 + k, size // 2 + k], outline=pattern, width=2
            )
        elif kind == "waves":
            draw.arc([k - step, 0, k + step, size], 0, 180, fill=pattern, width=2)
        else:
            draw.line([k, 0, k, size], fill=pattern, width=1)
            draw.line([0, k, size, k], fill=pattern, width=1)
    shade = int(rng.integers(110, 170))
    cx, cy = (int(v) for v in rng.integers(size // 3, 2 * size // 3 + 1, size=2))
    r = size // 5
    gray = (shade, shade, shade)
    name = GLYPHS[glyph % len(GLYPHS)]
    if name == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=gray)
    elif name == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=gray)
    elif name == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=gray)
    elif name == "diamond":
        draw.polygon([(cx, cy - r), (cx - r, cy), (cx, cy + r), (cx + r, cy)], fill=gray)
    else:
        draw.rectangle([cx - r, cy - r // 3, cx + r, cy + r // 3], fill=gray)
        draw.rectangle([cx - r // 3, cy - r, cx + r // 3, cy + r], fill=gray)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Item:
    asin: str
    domain: str
    category: int
    style: int
    brand: str
    adjective: str
    price: float
    popularity: float


def _make_items(spec: SyntheticSpec, rng: np.random.Generator) -> dict[str, list[_Item]]:
    per_domain = spec.items // len(spec.domains)
    catalog: dict[str, list[_Item]] = {}
    for d, domain in enumerate(spec.domains):
        brands = [
            f"{domain[:3].title()}{name}" for name in ("Nova", "Terra", "Lumen", "Astra", "Oak", "Vela")
        ]
        base_price = rng.uniform(5, 60, size=len(_categories(domain)))
        items = []
        for i in range(per_domain):
            category = int(rng.integers(len(_categories(domain))))
            items.append(
                _Item(
                    asin=f"S{d:02d}{i:07d}",
                    domain=domain,
                    category=category,
                    style=int(rng.integers(spec.styles)),
                    brand=brands[int(rng.integers(len(brands)))],
                    adjective=ADJECTIVES[int(rng.integers(len(ADJECTIVES)))],
                    price=round(float(base_price[category] * rng.lognormal(0, 0.3)), 2),
                    popularity=float(rng.lognormal(0, 0.8)),
                )
            )
        catalog[domain] = items
    return catalog


def _transition_matrix(n: int) -> np.ndarray:
    matrix = np.full((n, n), 0.25 / max(1, n - 2) if n > 2 else 0.0)
    for c in range(n):
        matrix[c, (c + 1) % n] += 0.55
        matrix[c, (c + 2) % n] += 0.2
    return matrix / matrix.sum(axis=1, keepdims=True)


def _price_text(price: float, rng: np.random.Generator) -> str:
    draw = rng.random()
    if draw < 0.05:
        return ""
    if draw < 0.08:
        return f"${price:.2f} - ${price * 1.5:.2f}"
    return f"${price:.2f}"


def write_raw_corpus(spec: SyntheticSpec, raw_dir: Path) -> None:
    """Write `<Domain>.json`, `meta_<Domain>.json` and `images/<asin>.png` for the spec."""
    rng = np.random.default_rng(spec.seed)
    catalog = _make_items(spec, rng)
    images_dir = raw_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for domain, items in catalog.items():
        meta_lines = []
        for item in items:
            (images_dir / f"{item.asin}.png").write_bytes(
                render_image(item.style, item.category, rng, spec.image_size)
            )
            category = _categories(domain)[item.category]
            record = {
                "category": [domain, category],
                "description": [f"The {item.adjective.lower()} {category.lower()} from {item.brand}."],
                "title": f"{item.brand} {item.adjective} {category} {item.asin[-3:]}",
                "image": [f"https://images.synthetic.invalid/{item.asin}.png"],
                "brand": item.brand,
                "price": _price_text(item.price, rng),
                "also_buy": [],
                "asin": item.asin,
            }
            meta_lines.append(json.dumps(record))
            if rng.random() < 0.02:  # the real dumps repeat some meta rows
                meta_lines.append(json.dumps(record))
        (raw_dir / f"meta_{domain}.json").write_text("\n".join(meta_lines) + "\n", encoding="utf-8")

    reviews: dict[str, list[str]] = {domain: [] for domain in spec.domains}
    transitions = {domain: _transition_matrix(len(_categories(domain))) for domain in spec.domains}
    for u in range(spec.users):
        user_id = f"SU{u:07d}"
        style = int(rng.integers(spec.styles))
        home = int(rng.integers(len(spec.domains)))
        active = [home]
        if len(spec.domains) > 1 and rng.random() < spec.cross_domain_share:
            active.append(int((home + 1 + rng.integers(len(spec.domains) - 1)) % len(spec.domains)))
        start = datetime(2015, 1, 1, tzinfo=timezone.utc).timestamp() + rng.uniform(0, 3 * 365 * 86400)
        events = []
        for d in active:
            domain = spec.domains[d]
            items = catalog[domain]
            n_categories = len(_categories(domain))
            taste = rng.dirichlet(np.full(n_categories, 0.7))
            length = 5 + int(rng.poisson(spec.mean_extra_length))
            time, previous, bought = start, None, set()
            for _ in range(length):
                mix = taste if previous is None else 0.6 * transitions[domain][previous] + 0.4 * taste
                category = int(rng.choice(n_categories, p=mix / mix.sum()))
                candidates = [i for i, it in enumerate(items) if it.category == category and i not in bought]
                if not candidates:
                    continue
                weights = np.array(
                    [
                        items[i].popularity * np.exp(spec.style_affinity * (items[i].style == style))
                        for i in candidates
                    ]
                )
                chosen = candidates[int(rng.choice(len(candidates), p=weights / weights.sum()))]
                bought.add(chosen)
                time += rng.exponential(20 * 86400)
                events.append((domain, items[chosen], int(time), taste[category] > 1 / n_categories))
                previous = category
        for domain, item, timestamp, liked_category in events:
            match = item.style == style
            score = 3 + 1.4 * match - 0.9 * (not match) + 0.5 * liked_category + rng.normal(0, 0.6)
            rating = int(np.clip(round(score), 1, 5))
            pool = POSITIVE if rating >= 4 else NEGATIVE if rating <= 2 else POSITIVE[:4] + NEGATIVE[:4]
            words = " ".join(rng.choice(pool, size=int(rng.integers(4, 12))))
            category = _categories(domain)[item.category].lower()
            record = {
                "overall": float(rating),
                "verified": True,
                "reviewTime": datetime.fromtimestamp(timestamp, timezone.utc).strftime("%m %d, %Y"),
                "reviewerID": user_id,
                "asin": item.asin,
                "reviewerName": f"Shopper {u}",
                "reviewText": f"This {category} is {words}.",
                "summary": SUMMARIES[rating],
                "unixReviewTime": timestamp,
            }
            reviews[domain].append(json.dumps(record))
            if (
                rng.random() < 0.01
            ):  # a repeated review of the same item, later: de-duplication keeps the first
                reviews[domain].append(json.dumps(record | {"unixReviewTime": timestamp + 86400}))
    for domain, lines in reviews.items():
        (raw_dir / f"{domain}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
