"""The normalized record kinds the data stage writes, one dataclass each.

Every record id is `<source>-<key>`: the 0-based row index in the source file/dataset for real data, a short
hash of the expression for the synthetic task (so the same expression has the same id in every file).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass(frozen=True)
class SourceRecord:
    """One problem as read from a source, before it becomes an RL/eval problem or a cold-start example."""

    id: str
    source: str
    problem: str
    answer: str
    solution: Optional[str] = None  # worked solution (cold-start reasoning), when the source has one
    difficulty: Optional[int] = None  # synthetic: number of operations; real data: None

    def problem_row(self) -> "Problem":
        return Problem(self.id, self.source, self.problem, self.answer, self.difficulty)


@dataclass(frozen=True)
class Problem:
    """An RL prompt or an evaluation problem with a verifiable gold answer. Rows of rl_*.jsonl and eval/*.jsonl."""

    id: str
    source: str
    problem: str
    answer: str
    difficulty: Optional[int] = None

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ColdStartExample:
    """A cold-start SFT example: `reasoning` goes inside <think>…</think>, `answer` inside <answer>…</answer>.

    The SFT stage formats the conversation (r1_pipeline.chat); the data stage only supplies the parts.
    """

    id: str
    source: str
    problem: str
    answer: str
    reasoning: str

    def to_row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class CorpusDocument:
    """A pretraining document of the from-scratch base model: the prompt and the raw assistant text.

    `error` (not written) says which deliberate error the document carries: "" (none), "step" (a wrong step
    result that propagates), "final" (a wrong final answer) or "guess" (a lazy document forced to guess wrong;
    lazy documents outside the error share guess wrong part of the time too, by design).
    """

    prompt: str
    completion: str
    style: str
    error: str = ""

    def to_row(self) -> dict:
        return {"prompt": self.prompt, "completion": self.completion, "style": self.style}
