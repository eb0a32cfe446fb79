"""Counting of rejected input, by scope and reason, with the first few examples of each."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_EXAMPLES = 3


@dataclass
class RejectLog:
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[dict]] = field(default_factory=dict)

    def add(self, reason: str, file: str, line: int | None, detail: str = "", count: int = 1) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + count
        kept = self.examples.setdefault(reason, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append({"file": file, "line": line, "detail": detail[:200]})

    def add_lines(self, reason: str, file: str, lines: list[int]) -> None:
        """Count one rejection per line number, keeping the first few as examples."""
        for line in lines[:MAX_EXAMPLES]:
            self.add(reason, file, line)
        if len(lines) > MAX_EXAMPLES:
            self.counts[reason] += len(lines) - MAX_EXAMPLES

    def merge(self, other: RejectLog) -> None:
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            kept = self.examples.setdefault(reason, [])
            kept.extend(other.examples.get(reason, [])[: MAX_EXAMPLES - len(kept)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_json(self) -> dict:
        return {
            reason: {"count": self.counts[reason], "examples": self.examples.get(reason, [])}
            for reason in sorted(self.counts)
        }
