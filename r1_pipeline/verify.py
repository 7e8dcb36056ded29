"""Answer extraction and verification: the accuracy reward, the evaluation verdict and `r1 verify`.

A verdict is always two steps:

1. `extract_answer`: the answer span of a response, from the last `<answer>…</answer>`, else the last
   `\\boxed{…}`/`\\fbox{…}`, else a final-answer phrase ("A: 42", "#### 42", "The answer is 42") after the
   reasoning. math-verify on a whole response may pick a number out of the reasoning, so we never do that.
2. `verify`: plain numbers (integers, decimals, simple fractions) compare exactly in Python, which is what
   almost every GRPO reward call needs and takes microseconds; everything else goes to math-verify under
   a time budget per item.

How the time budget works: math-verify's own timeouts use `signal.alarm` with whole seconds per call and
raise in non-main threads. We switch them off and bound the whole item ourselves: in the main thread with a
sub-second `setitimer` deadline; in any other thread by sending the item to a worker process (whose main
thread uses the same deadline) and killing the worker if it does not answer. Spans that could blow up
before a signal is even delivered (huge, deeply nested, power towers) never reach sympy: they are compared
as normalized strings. See docs/verification.md for the measured agreement with independent graders.
"""

from __future__ import annotations

import atexit
import json
import math
import multiprocessing
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator, NamedTuple

# Longer spans are not answers a grader would accept either; they are compared as strings only.
MAX_SPAN_CHARS = 1000
# A \boxed{…} group longer than this is treated as unclosed (bounds the scan on megabyte outputs).
MAX_BOX_CHARS = 10_000
# How many \boxed occurrences to try, from the last, when the last ones are unclosed.
MAX_BOX_TRIES = 4
# Deeper brace nesting overflows the LaTeX parser's recursion; such spans are compared as strings.
MAX_BRACE_DEPTH = 20
# Wall-clock budget for math-verify on one item (parse gold, parse prediction, compare).
VERIFY_TIMEOUT_S = 2.0
# Fast-path numbers with more digits than this are compared by their canonical decimal string.
MAX_EXACT_DIGITS = 1000

GOLD_FORMATS = ("plain", "gsm8k", "boxed")


# ------------------------------------------------------------------------------------------------ extraction


_BRACE_TOKEN = re.compile(r"\\.|[{}]", re.DOTALL)  # escaped chars (\{, \}, \\) never count as braces
_BOX_COMMANDS = ("\\boxed", "\\fbox")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def _group_end(text: str, open_pos: int, limit: int = MAX_BOX_CHARS) -> int | None:
    """Index of the `}` closing the `{` at open_pos, or None if it does not close within `limit` chars."""
    depth = 0
    for m in _BRACE_TOKEN.finditer(text, open_pos, min(len(text), open_pos + limit)):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last closed `\\boxed{…}` or `\\fbox{…}` (balanced braces), else None."""
    end = len(text)
    for _ in range(MAX_BOX_TRIES):
        start = max(text.rfind(cmd, 0, end) for cmd in _BOX_COMMANDS)
        if start < 0:
            return None
        cmd_len = len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox")
        pos = start + cmd_len
        while pos < len(text) and text[pos] == " ":
            pos += 1
        if pos < len(text) and text[pos] == "{":
            close = _group_end(text, pos)
            if close is not None:
                return text[pos + 1 : close].strip()
        elif pos > start + cmd_len and pos < len(text):
            # `\boxed 5`: TeX takes the next token as the argument.
            m = re.match(r"[^\s$]+", text[pos : pos + 100])
            if m:
                return m.group()
        end = start  # unclosed or empty: try the previous one
    return None


# Final-answer phrases, used only when there is no <answer> tag and no \boxed. Each is anchored on a phrase,
# never on a bare number, so a number in the reasoning cannot be taken for the answer. The patterns match
# the phrase only (the answer is the rest of its line), so every occurrence is found, not just the first.
_PHRASES = [
    re.compile(r"####[ \t]*"),  # GSM8K reference style
    re.compile(r"(?im)^[ \t]*(?:A|Answer|Final answer)[ \t]*:[ \t]*"),  # "A: 42" on its own line
    re.compile(r"(?i)\b(?:final answer|the answer)(?: to [^\n.]{0,80}?)?[ \t]+is[ \t]*:?[ \t]*"),
]
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[;!?](?:\s|$)")
MAX_PHRASE_ANSWER_CHARS = 300


def _phrase_answer(text: str) -> str | None:
    """The answer stated by the last final-answer phrase after the reasoning, else None."""
    think_end = text.rfind("</think>")
    if think_end >= 0:
        text = text[think_end + len("</think>") :]
    elif "<think>" in text:
        return None  # the reasoning never closed: whatever it states is not a final answer
    start = max((m.end() for pattern in _PHRASES for m in pattern.finditer(text)), default=-1)
    if start < 0:
        return None
    line_end = text.find("\n", start, start + MAX_PHRASE_ANSWER_CHARS)
    span = text[start : line_end if line_end >= 0 else start + MAX_PHRASE_ANSWER_CHARS].strip()
    for left, right in _WRAPPERS:  # "$\frac{1}{2}$. So ..." -> the math group
        if span.startswith(left):
            end = span.find(right, len(left))
            if end > len(left):
                return span[: end + len(right)]
            break
    m = _SENTENCE_END.search(span)  # "42. I hope it is correct." -> "42"; decimals survive
    if m:
        span = span[: m.start()]
    return span.strip() or None


def extract_answer(text: str) -> str | None:
    """The answer span of a response: content of the last `<answer>…</answer>`, else of the last
    `\\boxed{…}`/`\\fbox{…}`, else of the last final-answer phrase after `</think>`, else None.

    Linear in the length of the text (rfind, bounded brace scans, anchored regexes), so megabyte outputs
    cost milliseconds.
    """
    if not isinstance(text, str) or not text:
        return None
    close = text.rfind("</answer>")
    if close >= 0:
        open_ = text.rfind("<answer>", 0, close)
        if open_ >= 0:
            return text[open_ + len("<answer>") : close].strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    return _phrase_answer(text)


def gold_from_gsm8k(answer_text: str) -> str | None:
    """The GSM8K reference answer: the text after the last `####`, commas removed ("1,000" -> "1000")."""
    if not isinstance(answer_text, str) or "####" not in answer_text:
        return None
    gold = answer_text.rsplit("####", 1)[1].strip().replace(",", "")
    return gold or None


def gold_from_boxed(solution_text: str) -> str | None:
    """The MATH-style reference answer: the content of the last `\\boxed{…}` of a worked solution."""
    if not isinstance(solution_text, str):
        return None
    return last_boxed(solution_text) or None


def normalize_gold(value: Any, gold_format: str = "plain") -> str | None:
    """A gold answer as a string: `plain` takes it as is (numbers allowed), `gsm8k`/`boxed` extract it."""
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"gold_format must be one of {GOLD_FORMATS}, got {gold_format!r}")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        # Numeric gold columns (AMC stores 27.0): integral floats as integers, never exponent notation.
        if isinstance(value, float):
            if not math.isfinite(value):
                return None
            if not value.is_integer():
                return format(Decimal(repr(value)), "f")
            value = int(value)
        try:
            return str(value)
        except ValueError:  # an int too long for str()
            return None
    if not isinstance(value, str):
        return None
    if gold_format == "gsm8k":
        return gold_from_gsm8k(value)
    if gold_format == "boxed":
        return gold_from_boxed(value)
    return value.strip() or None


# ------------------------------------------------------------------------------------------- fast number path


class _Number(NamedTuple):  # a NamedTuple, not a dataclass: this sits on the hot path of every reward call
    value: int | Fraction | None  # None when too many digits to convert cheaply
    canon: str  # canonical text: equal numbers (of the same kind) have equal canon
    decimal: bool  # written with a decimal point: compared like math-verify, rounded to 6 places


_DECIMAL = re.compile(r"([-+]?)(\d{1,3}(?:,\d{3})+|\d*)(?:\.(\d+))?")
_FRACTION = re.compile(r"([-+]?)(?:\\frac\{(\d+)\}\{(\d+)\}|\\frac(\d)(\d)|(\d+)/(\d+))")


def _unwrap(s: str) -> str:
    """Strip math delimiters and a whole-span \\boxed{…}/{…} group."""
    for _ in range(8):
        s = s.strip()
        before = s
        for left, right in _WRAPPERS:
            if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left) : -len(right)]
                break
        else:
            for prefix in ("\\boxed{", "\\fbox{", "{"):
                if s.startswith(prefix) and _group_end(s, len(prefix) - 1, len(s) + 1) == len(s) - 1:
                    s = s[len(prefix) : -1]
                    break
        if s == before:
            return s
    return s


def _as_number(span: str) -> _Number | None:
    """The span as a plain number (integer, decimal, fraction; thousands commas, currency, sign), else None."""
    if span.isascii() and span.isdigit() and len(span) <= MAX_EXACT_DIGITS:  # the common case, 1 us
        value = int(span)
        return _Number(value, str(value), False)
    s = _unwrap(span)
    if re.search(r",\s", s):  # "2, 125" is a list, not two thousand one hundred twenty-five
        return None
    s = s.replace("\\!", "").replace("{,}", ",").replace("\\,", "").replace("\u2212", "-")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace(" ", "")
    if s.startswith("\\$"):
        s = s[2:]
    elif s.startswith("$"):
        s = s[1:]
    elif s.startswith(("-\\$", "-$")):
        s = "-" + s.lstrip("-\\$")
    if s.endswith(".") and not s.endswith(".."):
        s = s[:-1]
    if not s:
        return None
    m = _DECIMAL.fullmatch(s)
    if m and (m.group(2) or m.group(3)):
        sign, whole, frac = m.group(1), m.group(2).replace(",", ""), m.group(3) or ""
        whole, frac = whole.lstrip("0") or "0", frac.rstrip("0")
        canon = whole + ("." + frac if frac else "")
        if canon != "0" and sign == "-":
            canon = "-" + canon
        value = None
        if len(canon) <= MAX_EXACT_DIGITS:  # int() of longer digit strings is slow (and capped by Python)
            value = Fraction(int(whole + frac), 10 ** len(frac)) if frac else int(whole)
            value = -value if sign == "-" else value
        return _Number(value, canon, decimal=m.group(3) is not None)
    m = _FRACTION.fullmatch(s)
    if m:
        num, den = next((m.group(i), m.group(i + 1)) for i in (2, 4, 6) if m.group(i))
        if len(num) + len(den) > MAX_EXACT_DIGITS or not den.strip("0"):  # huge, or a zero denominator
            return _Number(None, f"{m.group(1).replace('+', '')}{num.lstrip('0')}/{den.lstrip('0')}", False)
        value = Fraction(int(num), int(den)) * (-1 if m.group(1) == "-" else 1)
        return _Number(value, str(value), decimal=False)
    return None


def _numbers_equal(a: _Number, b: _Number) -> bool:
    if a.value is None or b.value is None:
        return a.canon == b.canon
    if a.value == b.value:
        return True
    if a.decimal or b.decimal:  # as math-verify: a float equals anything that rounds to it at 6 places
        return round(a.value, 6) == round(b.value, 6)
    return False


# ------------------------------------------------------------------------------------------ math-verify path


class _Deadline(BaseException):
    """Raised by our SIGALRM handler; a BaseException so math-verify's `except Exception` cannot swallow it."""


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """Raise _Deadline in the main thread after `seconds`; restores any timer the caller had set."""
    armed = [True]

    def on_alarm(signum, frame):
        if armed[0]:
            raise _Deadline()

    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    old_delay, _ = signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))  # 0 would mean "no timer"
    started = time.monotonic()
    try:
        yield
    finally:
        armed[0] = False  # a late alarm must not fire inside this cleanup
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay:
            signal.setitimer(signal.ITIMER_REAL, max(old_delay - (time.monotonic() - started), 1e-3))


_BIG_EXPONENT = re.compile(r"(?:\^|\*\*)\s*[{(]?\s*[-+]?\d{5,}")
_BIG_COMBINATORIC = re.compile(r"\d{5,}\s*!|\\binom|\\choose|factorial|binomial|gamma")
_GROUP_TOKEN = re.compile(r"\\.|[{}()]|\^|\*\*")  # escaped \{ \( are not groups


def _is_unsafe(span: str) -> bool:
    """Spans that could stall sympy inside C code (where no signal is delivered) or overflow the parser:
    too long, too deeply nested, power towers (9^{9^{9}}, 9**9**9), or huge exponents and factorials."""
    if len(span) > MAX_SPAN_CHARS:
        return True
    if _BIG_EXPONENT.search(span) or (_BIG_COMBINATORIC.search(span) and re.search(r"\d{5,}", span)):
        return True
    if "**" in span and len(re.findall(r"\^|\*\*", span)) > 1:
        return True
    exponent_groups: list[bool] = []  # one entry per open {…} or (…): is it an exponent?
    caret_end = -1
    for m in _GROUP_TOKEN.finditer(span):
        tok = m.group()
        if tok in ("^", "**"):
            if any(exponent_groups):
                return True
            caret_end = m.end()
        elif tok in ("{", "("):
            exponent_groups.append(caret_end >= 0 and not span[caret_end : m.start()].strip())
            if len(exponent_groups) > MAX_BRACE_DEPTH:
                return True
        elif tok in ("}", ")") and exponent_groups:
            exponent_groups.pop()
    return False


def _canon_text(s: str) -> str:
    """Whitespace- and delimiter-insensitive text, for spans we do not hand to sympy."""
    s = _unwrap(s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;"):
        s = s.replace(token, "")
    return "".join(s.split())


def answer_key(span: str | None) -> str | None:
    """A normalized form of an answer span for majority voting: equal numbers get one key ("0.5",
    "\\frac{1}{2}", "$1/2$" -> "1/2"), other spans their delimiter- and whitespace-free text."""
    if not isinstance(span, str) or not span.strip():
        return None
    number = _as_number(span)
    if number is not None:
        return number.canon if number.value is None else str(number.value)
    return _canon_text(span)


_math_verify = None


def _load_math_verify():
    """Import math-verify once and silence its 'timeouts disabled' warning: we bound time ourselves."""
    global _math_verify
    if _math_verify is None:
        import math_verify
        import math_verify.grader
        import math_verify.parser

        math_verify.parser.TIMEOUT_WARNING_SHOWN = True
        math_verify.grader.TIMEOUT_WARNING_SHOWN = True
        _math_verify = math_verify
    return _math_verify


def _latex_input(span: str) -> str:
    """What to hand to math_verify.parse: it only finds math inside delimiters or \\boxed."""
    if any(t in span for t in ("\\boxed", "\\fbox", "$", "\\(", "\\[")):
        return span
    return f"${span}$"


@lru_cache(maxsize=4096)
def _parse_gold(gold: str):
    # Cached: GRPO scores many completions against the same gold. Timeouts propagate, so are not cached.
    mv = _load_math_verify()
    return mv.parse(_latex_input(gold), parsing_timeout=None)


_PROSE_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")  # a word, not a LaTeX command


@lru_cache(maxsize=8192)
def _math_verify_equal(pred: str, gold: str) -> bool:
    """math-verify on the two spans, no time limit of its own (callers bound it). Cached: the completions
    of one GRPO group often end in the same answer."""
    mv = _load_math_verify()
    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return False
    pred_parsed = mv.parse(_latex_input(pred), parsing_timeout=None)
    if pred_parsed and mv.verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True
    if _PROSE_WORD.search(pred):
        # "Janet makes 18 dollars" read as LaTeX is a product of letters; as text math-verify finds the 18.
        pred_parsed = mv.parse(pred, parsing_timeout=None)
        return bool(pred_parsed) and bool(mv.verify(gold_parsed, pred_parsed, timeout_seconds=None))
    return False


def _bounded_math_verify(pred: str, gold: str, timeout_s: float) -> bool:
    """math-verify under a deadline in the main thread; a worker process from any other thread."""
    if not _in_main_thread():
        return _verify_in_worker(pred, gold, timeout_s)
    try:
        with _time_limit(timeout_s):
            return _math_verify_equal(pred, gold)
    except (_Deadline, Exception):
        return False


class _Worker:
    """A `python -m r1_pipeline.verify --worker` child that verifies in its own main thread, one JSON line in,
    one verdict line out. Used from non-main threads; killed and replaced if it overruns. A plain
    subprocess rather than multiprocessing: spawn would re-run the caller's __main__ script and fork is
    unsafe in a process that runs threads."""

    def __init__(self) -> None:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "r1_pipeline.verify", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True,
        )
        self.started = False

    def ask(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """The verdict, or None if the worker died or did not answer in time."""
        self.proc.stdin.write(json.dumps({"pred": pred, "gold": gold, "timeout_s": timeout_s}) + "\n")
        self.proc.stdin.flush()
        # The first answer includes the worker's start-up (importing sympy and math-verify).
        wait = timeout_s + (5.0 if self.started else 60.0)
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        line = self.proc.stdout.readline() if ready else ""
        if line.strip() not in ("0", "1"):
            return None
        self.started = True
        return line.strip() == "1"

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_worker_lock = threading.Lock()
_worker: _Worker | None = None


def _verify_in_worker(pred: str, gold: str, timeout_s: float) -> bool:
    global _worker
    with _worker_lock:  # one request at a time: the worker answers in order
        try:
            if _worker is None:
                _worker = _Worker()
                atexit.register(_worker.close)
            verdict = _worker.ask(pred, gold, timeout_s)
        except (OSError, ValueError):
            verdict = None
        if verdict is None and _worker is not None:  # stuck or dead: replace it on the next call
            _worker.close()
            _worker = None
        return bool(verdict)


def _worker_main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        ok = verify(request["pred"], request["gold"], request["timeout_s"])
        sys.stdout.write("1\n" if ok else "0\n")
        sys.stdout.flush()


# ----------------------------------------------------------------------------------------------- the verdict


def verify(pred_span: str | None, gold: Any, timeout_s: float = VERIFY_TIMEOUT_S) -> bool:
    """Whether an extracted answer span equals the gold answer. Never raises; bounded in time.

    Plain numbers on both sides compare exactly (floats rounded to 6 places, as math-verify does);
    anything else goes through math-verify within `timeout_s` seconds; spans too large or too deep for
    sympy are compared as normalized strings.
    """
    try:
        if not isinstance(pred_span, str):
            return False
        gold_text = normalize_gold(gold)
        pred = pred_span.strip()
        if not pred or gold_text is None:
            return False
        a, b = _as_number(pred), _as_number(gold_text)
        if a is not None and b is not None:
            return _numbers_equal(a, b)
        if _is_unsafe(pred) or _is_unsafe(gold_text):
            return _canon_text(pred) == _canon_text(gold_text)
        return _bounded_math_verify(pred, gold_text, timeout_s)
    except Exception:
        return False


def is_correct(completion: str, gold: Any) -> bool:
    """The accuracy verdict of a whole response: `verify(extract_answer(completion), gold)`."""
    return verify(extract_answer(completion), gold)


# -------------------------------------------------------------------------------------- scoring a JSONL file


class VerifyInputError(ValueError):
    """A JSONL file that cannot be scored; the message names the file, line and field."""


@dataclass
class Confusion:
    """2x2 counts of (label, ours)."""

    label_true_ours_true: int = 0
    label_true_ours_false: int = 0
    label_false_ours_true: int = 0
    label_false_ours_false: int = 0

    def add(self, label: bool, ours: bool) -> None:
        name = f"label_{str(label).lower()}_ours_{str(ours).lower()}"
        setattr(self, name, getattr(self, name) + 1)


@dataclass
class GroupStats:
    n: int = 0
    correct: int = 0  # our verdict true
    labelled: int = 0
    label_true: int = 0
    agree: int = 0

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def agreement(self) -> float | None:
        return self.agree / self.labelled if self.labelled else None


@dataclass
class ItemVerdict:
    line: int
    group: str | None
    extracted: str | None
    correct: bool
    label: bool | None = None
    uid: Any = None


@dataclass
class VerifyResult:
    path: str
    items: list[ItemVerdict]
    seconds: float
    label_field: str | None = None
    groups: dict[str, GroupStats] = field(default_factory=dict)
    overall: GroupStats = field(default_factory=GroupStats)
    confusion: Confusion | None = None

    @property
    def throughput(self) -> float:
        """Responses verified per second (extraction + verification, excluding file reading)."""
        return len(self.items) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def agreement(self) -> float | None:
        return self.overall.agreement

    def disagreements(self) -> list[ItemVerdict]:
        return [it for it in self.items if it.label is not None and it.label != it.correct]


_TRUE = {"true", "1", "yes", "correct", "y", "t"}
_FALSE = {"false", "0", "no", "incorrect", "wrong", "n", "f"}


def _as_label(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return None


def _response_text(value: Any) -> str | None:
    """A response field as text: a string, or a chat list whose last message content is the response."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict):
        content = value[-1].get("content")
        return content if isinstance(content, str) else None
    return None


def _read_records(path: Path) -> list[tuple[int, dict]]:
    if not path.exists():
        raise VerifyInputError(f"{path}: file not found")
    if path.is_dir():
        raise VerifyInputError(f"{path}: is a directory, expected a JSONL file")
    records = []
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise VerifyInputError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise VerifyInputError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append((lineno, record))
    if not records:
        raise VerifyInputError(f"{path}: no records")
    return records


def _field(path: Path, lineno: int, record: dict, name: str) -> Any:
    if name not in record:
        available = ", ".join(sorted(record)[:20])
        raise VerifyInputError(f"{path}:{lineno}: field {name!r} missing (fields: {available})")
    return record[name]


def _score_one(args: tuple[str | None, str]) -> tuple[str | None, bool]:
    response, gold = args
    extracted = extract_answer(response) if response is not None else None
    return extracted, verify(extracted, gold)


def score_jsonl(
    path: str | os.PathLike,
    response_field: str = "response",
    gold_field: str = "gold_answer",
    label_field: str | None = None,
    gold_format: str = "plain",
    workers: int = 1,
    group_field: str | None = None,
) -> VerifyResult:
    """Verify every record of a JSONL file; with `label_field`, measure agreement with those labels.

    Groups (for per-benchmark numbers) come from `group_field`, else a `benchmark` or `source` field when
    the records have one. Raises VerifyInputError with the line and field on bad input.
    """
    path = Path(path)
    if gold_format not in GOLD_FORMATS:
        raise VerifyInputError(f"gold_format must be one of {', '.join(GOLD_FORMATS)}, got {gold_format!r}")
    records = _read_records(path)
    if group_field is None:
        group_field = next((f for f in ("benchmark", "source") if f in records[0][1]), None)

    jobs, meta = [], []
    for lineno, record in records:
        raw_response = _field(path, lineno, record, response_field)
        response = _response_text(raw_response)
        if response is None and raw_response is not None:
            raise VerifyInputError(
                f"{path}:{lineno}: field {response_field!r} must be a string or a chat message list, "
                f"got {type(raw_response).__name__}"
            )
        gold = normalize_gold(_field(path, lineno, record, gold_field), gold_format)
        if gold is None:
            raise VerifyInputError(
                f"{path}:{lineno}: field {gold_field!r} has no gold answer (format {gold_format!r})"
            )
        label = None
        if label_field is not None:
            label = _as_label(_field(path, lineno, record, label_field))
            if label is None:
                raise VerifyInputError(
                    f"{path}:{lineno}: field {label_field!r} must be true/false, got {record[label_field]!r}"
                )
        group = record.get(group_field) if group_field else None
        jobs.append((response, gold))
        meta.append((lineno, None if group is None else str(group), label, record.get("uid", record.get("id"))))

    start = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            verdicts = pool.map(_score_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    else:
        verdicts = [_score_one(job) for job in jobs]
    seconds = time.perf_counter() - start

    result = VerifyResult(str(path), [], seconds, label_field=label_field)
    if label_field is not None:
        result.confusion = Confusion()
    for (lineno, group, label, uid), (extracted, correct) in zip(meta, verdicts):
        result.items.append(ItemVerdict(lineno, group, extracted, correct, label, uid))
        stats = [result.overall] + ([result.groups.setdefault(group, GroupStats())] if group else [])
        for s in stats:
            s.n += 1
            s.correct += correct
            if label is not None:
                s.labelled += 1
                s.label_true += label
                s.agree += label == correct
        if label is not None:
            result.confusion.add(label, correct)
    return result


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def format_report(result: VerifyResult) -> str:
    """A readable summary: accuracy, agreement per group, the confusion matrix and throughput."""
    o = result.overall
    lines = [
        f"Verified {o.n} responses from {result.path} in {result.seconds:.2f} s "
        f"({result.throughput:,.0f} responses/s)",
        "",
    ]
    labelled = result.label_field is not None
    header = f"{'group':<20} {'n':>7} {'ours correct':>13}"
    if labelled:
        header += f" {'label correct':>14} {'agree':>7} {'agreement':>10}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = sorted(result.groups.items()) + [("all", o)]
    for name, s in rows:
        row = f"{name:<20} {s.n:>7} {_pct(s.accuracy):>13}"
        if labelled:
            label_acc = s.label_true / s.labelled if s.labelled else None
            row += f" {_pct(label_acc):>14} {s.agree:>7} {_pct(s.agreement):>10}"
        lines.append(row)
    if result.confusion is not None:
        c = result.confusion
        lines += [
            "",
            f"Confusion matrix (rows: {result.label_field!r}, columns: our verdict)",
            f"{'':<14} {'ours=true':>10} {'ours=false':>11}",
            f"{'label=true':<14} {c.label_true_ours_true:>10} {c.label_true_ours_false:>11}",
            f"{'label=false':<14} {c.label_false_ours_true:>10} {c.label_false_ours_false:>11}",
        ]
        disagreements = result.disagreements()
        if disagreements:
            lines += ["", f"Disagreements: {len(disagreements)} (first 10: line, group, label, ours, extracted)"]
            for it in disagreements[:10]:
                shown = "None" if it.extracted is None else repr(it.extracted[:60])
                lines.append(f"  line {it.line:>6}  {it.group or '-':<12} {it.label!s:<5} {it.correct!s:<5} {shown}")
    return "\n".join(lines)


def write_verdicts(result: VerifyResult, output: str | os.PathLike) -> None:
    """Per-item verdicts as JSONL, written atomically (a temp file in the same folder, then os.replace)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for it in result.items:
                row = {"line": it.line, "uid": it.uid, "group": it.group, "extracted": it.extracted,
                       "correct": it.correct}
                if it.label is not None:
                    row.update(label=it.label, agree=it.label == it.correct)
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_verify(
    file: str | os.PathLike,
    response_field: str = "response",
    gold_field: str = "gold_answer",
    label_field: str | None = None,
    gold_format: str = "plain",
    group_field: str | None = None,
    output: str | os.PathLike | None = None,
    workers: int = 1,
) -> int:
    """`r1 verify`: score a JSONL file, print the report, optionally write verdicts. Returns an exit code
    (0 done, 2 bad input)."""
    try:
        result = score_jsonl(file, response_field, gold_field, label_field, gold_format, workers, group_field)
    except VerifyInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_report(result))
    if output is not None:
        write_verdicts(result, output)
        print(f"\nWrote {len(result.items)} verdicts to {output}")
    return 0


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
