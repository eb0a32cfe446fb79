"""The demo's stages: a stage whose recorded inputs match and whose outputs exist is skipped; a
changed input, a missing output, a failed run or --force runs it again, and what depends on it."""

from __future__ import annotations

import pytest

from unimp_bench.demo import Stages
from unimp_bench.errors import UnimpError


def test_stages_skip_only_what_is_up_to_date(tmp_path):
    calls: list[str] = []

    def work(name: str):
        def run() -> None:
            calls.append(name)
            (tmp_path / name).write_text(name)

        return run

    def demo(version: int, force: bool = False) -> list[str]:
        said: list[str] = []
        stages = Stages(tmp_path, force, said.append, 2)
        first = stages.run("a", "stage a", {"version": version}, work("a"), [tmp_path / "a"])
        stages.run("b", "stage b", {"a": first}, work("b"), [tmp_path / "b"])
        return said

    demo(1)
    assert calls == ["a", "b"]
    said = demo(1)
    assert calls == ["a", "b"] and said == [
        "1/2 stage a: up to date, skipped",
        "2/2 stage b: up to date, skipped",
    ]
    demo(2)  # a changed input reruns its stage and everything downstream of it
    assert calls == ["a", "b", "a", "b"]
    (tmp_path / "b").unlink()  # a missing output reruns that stage only
    demo(2)
    assert calls[-1] == "b" and len(calls) == 5
    demo(2, force=True)
    assert calls[-2:] == ["a", "b"]

    def fail() -> None:
        raise UnimpError("stage b broke")

    stages = Stages(tmp_path, False, lambda _: None, 1)
    with pytest.raises(UnimpError):
        stages.run("b", "stage b", {"a": "new"}, fail, [tmp_path / "b"])
    assert not (tmp_path / ".demo" / "b.json").exists()  # a failed stage is never taken as done
