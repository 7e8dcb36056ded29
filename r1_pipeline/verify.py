"""Answer extraction and verification: the accuracy reward, the evaluation verdicts, rejection sampling.

A verdict is always two steps:

1. `extract_answer(text, policy)`: the answer span of a response, under one of two named policies.
   - `strict` (rewards, rejection sampling): the answer must be in the format the model is trained on, the
     last `<answer>…</answer>`, else the last `\\boxed{…}` of the final response (after `</think>`; nothing
     while a `<think>` block is still open). No fallback, so RL cannot learn to skip the format.
   - `eval` (scoring any model's output the way the standard harnesses do): `<answer>`, then the last box,
     then final-answer phrases ("The final answer is …", "Answer: …", "#### …", a last line "A: …"), then
     the rightmost math group or number of the final statement; in the final response first, then in the
     reasoning. docs/verification.md lists the order beside lighteval's and the Qwen2.5-Math harness's.
   math-verify on a whole response may pick a number out of the reasoning, so we never do that.
2. `verify` / `verify_verdict`: plain numbers compare exactly in Python (microseconds: almost every GRPO
   reward call); choice letters by letter; everything else goes to math-verify under a time budget per item.
   A verdict is `true`, `false` or `error` (a timeout or an exception inside the comparison): `check`
   returns it with the reason, so failures are counted by callers, never silently scored as wrong answers.

How the time budget works: math-verify's own timeouts use `signal.alarm` with whole seconds per call and
raise in non-main threads. We switch them off and bound the whole item ourselves: in the main thread with a
sub-second `setitimer` deadline; in any other thread by sending the item to a worker process (whose main
thread uses the same deadline) and killing the worker if it does not answer. A signal is only delivered
between bytecodes, so spans whose evaluation could stall inside C code (power towers whose value has
thousands of digits, huge factorials) or overflow the parser (very long, very deep) never reach sympy:
they are compared as normalized strings. `r1 verify` (r1_pipeline.verify_report) scores whole files.
"""

from __future__ import annotations

import atexit
import json
import math
import numbers
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
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
# A numeric power whose value has more digits than this is not handed to sympy: computing 9^{9^{9}} takes
# forever inside C code (no signal interrupts it), and Python refuses int->str past 4,300 digits anyway.
MAX_POWER_DIGITS = 4000
# Wall-clock budget for math-verify on one item (parse gold, parse prediction, compare).
VERIFY_TIMEOUT_S = 2.0
# Fast-path numbers with more digits than this are compared by their canonical decimal string.
MAX_EXACT_DIGITS = 1000
# The eval policy's last-statement rule looks at most this far back from the end of the final response.
MAX_STATEMENT_CHARS = 2000

GOLD_FORMATS = ("plain", "gsm8k", "boxed")
POLICIES = ("strict", "eval")
TRUE, FALSE, ERROR = "true", "false", "error"  # the three verdicts


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
    """Content of the last closed `\\boxed{…}` or `\\fbox{…}` (balanced braces), else None. An empty box
    is an answer too (an empty one, which verifies as wrong), as in both harnesses."""
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
        end = start  # unclosed: try the previous one
    return None


def _answer_tag(text: str) -> str | None:
    """Content of the last `<answer>…</answer>` pair, else None."""
    close = text.rfind("</answer>")
    if close >= 0:
        open_ = text.rfind("<answer>", 0, close)
        if open_ >= 0:
            return text[open_ + len("<answer>") : close].strip()
    return None


def _regions(text: str) -> tuple[str, str]:
    """(final response, reasoning): the text after the last `</think>` and the reasoning before it; with a
    `<think>` that never closes, no final response and the unfinished reasoning; without think tags, the
    whole text as the final response."""
    think_end = text.rfind("</think>")
    if think_end >= 0:
        return text[think_end + len("</think>") :], text[:think_end]
    think_start = text.find("<think>")
    if think_start >= 0:
        return "", text[think_start + len("<think>") :]
    return text, ""


# Final-answer phrases of the eval policy, each anchored on a phrase (the answer is the rest of its line).
# "A: 42" counts on the last line only: earlier it is a multiple-choice option ("A: 12\nB: 15").
_PHRASES = [
    re.compile(r"(?m)^[ \t]*####[ \t]*(?=[-+$\\0-9])"),  # GSM8K reference style; not a "#### Step 2" heading
    re.compile(r"(?im)^[ \t>*#]*(?:\*\*)?(?:final answer|answer)(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]*"),
    re.compile(
        r"(?i)\b(?:final answer|the answer|answer)(?: to [^\n.]{0,80}?)?(?:\*\*)?[ \t]+is(?:\*\*)?[ \t]*:?[ \t]*"
    ),
]
_LAST_LINE_A = re.compile(r"(?m)^[ \t]*A[ \t]*:[ \t]*(?=\S[^\n]*\s*\Z)")
_SENTENCE_END = re.compile(r"\.(?:\s|$)|[;!?](?:\s|$)")
MAX_PHRASE_ANSWER_CHARS = 300
# Math groups: display ($$…$$, \[…\]) may span lines, inline ($…$, \(…\)) stay on one; a `\$` is currency.
_MATH_GROUP = re.compile(
    r"(?<!\\)\$\$(.+?)(?<!\\)\$\$|\\\[(.+?)\\\]|(?<![\\$])\$(?!\$)([^$\n]+?)(?<!\\)\$|\\\((.+?)\\\)", re.DOTALL
)
# Numbers: thousands groups (1,000), decimals, simple fractions; a sign when it is not a hyphen in a word.
_NUMBER = re.compile(r"(?<![\w.])-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?(?![\w])")


def _math_group_answer(content: str) -> str:
    """The answer in a math group: the right-hand side of its last `=` ("x = 5" -> "5"), else all of it."""
    content = content.strip()
    if "=" in content and not re.search(r"\\(?:le|ge|ne)q?\b|[<>]", content):
        rhs = content.rsplit("=", 1)[1].strip()
        if rhs:
            return rhs
    return content


def _phrase_span(text: str, start: int) -> str | None:
    """The answer that follows a phrase ending at `start`: a math group right after it (also on the next
    line: "The answer is:\n\\[ 42 \\]") or after words only ("is therefore $5$"), else the rest of its
    line cut at the end of the sentence ("42. I hope it is correct." -> "42"; decimals survive)."""
    rest = text[start : start + MAX_PHRASE_ANSWER_CHARS]
    if not rest.split("\n", 1)[0].strip(" \t*:"):
        rest = rest.lstrip(" \t*:\n")
    line = rest.split("\n", 1)[0]
    m = _MATH_GROUP.match(rest.lstrip(" \t*:"))
    if m is None:
        m = _MATH_GROUP.search(line)
        if m is not None and _NUMBER.search(line[: m.start()]):
            m = None  # "5 because $2+3=5$": the text comes first
    if m is not None:
        return _math_group_answer(next(g for g in m.groups() if g is not None)) or None
    span = line.strip().strip("*").strip()
    end = _SENTENCE_END.search(span)
    if end:
        span = span[: end.start()]
    return span.strip().strip("*").strip() or None


def _phrase_answer(text: str) -> str | None:
    """The answer stated by the last final-answer phrase of the text, else None."""
    start = max((m.end() for pattern in _PHRASES for m in pattern.finditer(text)), default=-1)
    m = _LAST_LINE_A.search(text, max(0, len(text) - MAX_STATEMENT_CHARS))
    if m and m.end() > start:
        start = m.end()
    return None if start < 0 else _phrase_span(text, start)


def _last_statement_answer(text: str) -> str | None:
    """The rightmost math group or number in the last MAX_STATEMENT_CHARS of the text (numbers inside a
    math group belong to the group): "Therefore, Hillary has 7 nickels." -> "7"."""
    tail = text[-MAX_STATEMENT_CHARS:]
    best, best_end = None, -1
    covered = []
    for m in _MATH_GROUP.finditer(tail):
        covered.append((m.start(), m.end()))
        content = next(g for g in m.groups() if g is not None)
        if (_NUMBER.search(content) or re.search(r"\\[a-zA-Z]|[a-zA-Z]", content)) and m.end() > best_end:
            best, best_end = _math_group_answer(content), m.end()
    for m in _NUMBER.finditer(tail):
        if m.end() > best_end and not any(s <= m.start() < e for s, e in covered):
            best, best_end = m.group(), m.end()
    return best or None


def _eval_answer(region: str) -> str | None:
    boxed = last_boxed(region)
    if boxed is not None:
        return boxed
    phrase = _phrase_answer(region)
    if phrase is not None:
        return phrase
    return _last_statement_answer(region)


def extract_answer(text: str, policy: str = "strict") -> str | None:
    """The answer span of a response under `policy` (`strict` or `eval`, see the module docstring), or None.

    Linear in the length of the text (rfind, bounded brace scans, regexes with no nested quantifiers over
    bounded windows), so megabyte outputs cost milliseconds.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
    if not isinstance(text, str) or not text:
        return None
    tag = _answer_tag(text)
    if tag:
        return tag
    final, reasoning = _regions(text)
    if policy == "strict":
        return last_boxed(final)
    answer = _eval_answer(final) if final.strip() else None
    if answer is None and reasoning:
        # No answer after the reasoning (it never closed, or the final response is empty or garbage): the
        # Qwen2.5-Math harness scores the whole text, so what the reasoning ends with counts.
        answer = _eval_answer(reasoning)
    return answer


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
    """A gold answer as a string: `plain` takes it as is (numbers allowed), `gsm8k`/`boxed` extract it.

    Numbers of any numeric type (int, float, numpy scalars, Decimal, Fraction) become their plain decimal
    text: integral floats as integers (AMC stores 27.0), never exponent notation. None for no usable gold.
    """
    if gold_format not in GOLD_FORMATS:
        raise ValueError(f"gold_format must be one of {GOLD_FORMATS}, got {gold_format!r}")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, numbers.Number) and not isinstance(value, str):
        return _number_text(value)
    if not isinstance(value, str):
        return None
    if gold_format == "gsm8k":
        return gold_from_gsm8k(value)
    if gold_format == "boxed":
        return gold_from_boxed(value)
    return value.strip() or None


def _number_text(value: numbers.Number) -> str | None:
    try:
        if isinstance(value, numbers.Integral):  # int, numpy integers
            return str(int(value))
        if isinstance(value, Fraction):
            return str(value)
        if isinstance(value, (numbers.Real, Decimal)):  # float, numpy floats, Decimal (not a numbers.Real)
            if isinstance(value, Decimal):
                d = value
            else:
                f = float(value)
                if not math.isfinite(f):
                    return None
                d = Decimal(repr(f))
            if not d.is_finite():
                return None
            if d == d.to_integral_value():
                return str(int(d))
            return format(d.normalize(), "f")
    except (ValueError, OverflowError, TypeError):  # an int too long for str(), a complex number
        return None
    return None


# ------------------------------------------------------------------------------------------- fast number path


class _Number(NamedTuple):  # a NamedTuple, not a dataclass: this sits on the hot path of every reward call
    value: int | Fraction | None  # None when too many digits to convert cheaply
    canon: str  # canonical text: equal numbers (of the same kind) have equal canon
    decimal: bool  # written with a decimal point: compared like math-verify, rounded to 6 places


_DECIMAL = re.compile(r"([-+]?)([0-9]{1,3}(?:,[0-9]{3})+|[0-9]*)(?:\.([0-9]+))?")
_FRACTION = re.compile(r"([-+]?)(?:\\frac\{([0-9]+)\}\{([0-9]+)\}|\\frac([0-9])([0-9])|([0-9]+)/([0-9]+))")


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
    """The span as a plain number (integer, decimal, fraction; thousands separators, currency, sign, leading
    zeros), else None."""
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


# ------------------------------------------------------------------------------------------- choice letters

_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textrm|mathit|textit|bf|rm)\s*\{([^{}]*)\}")


def _strip_text_wrappers(s: str) -> str:
    for _ in range(3):
        s2 = _TEXT_WRAPPER.sub(r"\1", s)
        if s2 == s:
            break
        s = s2
    return s


def choice_letter(span: str, leading: bool = False) -> str | None:
    """The multiple-choice letter A-E a span stands for: `C`, `(C)`, `\\text{(C)}`, `\\textbf{(C)}`; with
    `leading`, also an option written out (`\\text{(C) Plane}`, `(C) 12`). None otherwise, and for a span
    naming two different letters."""
    s = _strip_text_wrappers(_unwrap(span)).replace("{", "").replace("}", "").strip().rstrip(".").strip()
    m = re.fullmatch(r"\(?([A-E])\)?", s)
    if m:
        return m.group(1)
    if leading:
        m = re.match(r"\(([A-E])\)(?![A-Za-z])", s)
        if m and len(set(re.findall(r"\(([A-E])\)", s))) == 1:
            return m.group(1)
    return None


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


_BIG_COMBINATORIC = re.compile(r"\d{5,}\s*!|\\binom|\\choose|factorial|binomial|gamma")
# Tokens of the power-size estimate: numbers, commands, groups, operators; anything else is a symbol.
_POWER_TOKEN = re.compile(r"[0-9]+(?:\.[0-9]+)?|\\[a-zA-Z]+|\\.|\*\*|[{}()\[\]^*/+\-,=]|[a-zA-Z]|\S")
_PRODUCT_COMMANDS = {"\\cdot", "\\times"}


class _TooBig(Exception):
    pass


def _power_digits_ok(span: str) -> bool:
    """False when some numeric power in the span has a value of more than MAX_POWER_DIGITS digits.

    A small recursive estimate of log10|value| over numbers, groups, + - * / ^ **, \\frac, \\cdot and
    \\times; a letter or any other command is a symbol (unknown value). Symbolic powers are harmless
    (sympy keeps e^{-x^{2}} and x^{9^{9}} unevaluated); only a numeric base with a numeric exponent is
    computed, and 3^{2^{2}} = 81 is fine while 9^{9^{9}} has 370 million digits.
    """
    tokens = _POWER_TOKEN.findall(span)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def group(closer: str) -> float | None:
        value = expr(closer)
        if peek() == closer:
            take()
        return value

    def atom() -> float | None:
        tok = take()
        if tok[0].isdigit():
            v = float(tok)
            return math.log10(v) if v > 0 else 0.0
        if tok in ("{", "(", "["):
            return group({"{": "}", "(": ")", "[": "]"}[tok])
        if tok == "\\frac" and peek() == "{":
            take()
            num = group("}")
            if peek() == "{":
                take()
                group("}")
            return num
        return None  # a symbol or command

    def power() -> float | None:
        base = atom()
        if peek() in ("^", "**"):
            take()
            if peek() is None:
                return base
            exponent = power()  # right-associative: 9^9^9 = 9^(9^9)
            if exponent is None or base is None:
                return None
            if base <= 0:  # |base| <= 1
                return 0.0
            if exponent > 10:  # an exponent of more than 10^10
                raise _TooBig
            value = (10.0**exponent) * base  # digits of the power: exponent value x log10(base)
            if value > MAX_POWER_DIGITS:
                raise _TooBig
            return value
        return base

    def term(closer: str | None) -> float | None:
        total, known = 0.0, False
        while peek() is not None and peek() not in ("+", "-", ",", "=", closer) and peek() not in "})]":
            if peek() in ("*", "/") or peek() in _PRODUCT_COMMANDS:
                take()
                continue
            value = power()
            if value is not None:
                total, known = total + max(value, 0.0), True
        return total if known else None

    def expr(closer: str | None) -> float | None:
        best = None
        while peek() is not None and peek() != closer:
            if peek() in ("+", "-", ",", "="):
                take()
                continue
            if peek() in "})]":  # an unbalanced closer of another kind
                take()
                continue
            value = term(closer)
            if value is not None:
                best = value if best is None else max(best, value) + math.log10(2)
        return best

    try:
        expr(None)
    except _TooBig:
        return False
    except RecursionError:
        return False
    return True


def _is_unsafe(span: str) -> bool:
    """Spans that could stall sympy inside C code (where no signal is delivered) or overflow the parser:
    too long, nested deeper than MAX_BRACE_DEPTH, numeric powers of more than MAX_POWER_DIGITS digits
    (9^{9^{9}}, 9**9**9, 10^{1000000}), factorials and binomials of 5-digit numbers."""
    if len(span) > MAX_SPAN_CHARS:
        return True
    if _BIG_COMBINATORIC.search(span) and re.search(r"\d{5,}", span):
        return True
    depth = 0
    for ch in span:
        if ch in "{(":
            depth += 1
            if depth > MAX_BRACE_DEPTH:
                return True
        elif ch in "})":
            depth -= 1
    if "^" in span or "**" in span:
        return not _power_digits_ok(span)
    return False


def _canon_text(s: str) -> str:
    """Whitespace- and delimiter-insensitive text, for equality before sympy and for spans it never sees."""
    s = _unwrap(s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for token in ("\\left", "\\right", "\\!", "\\,", "\\;"):
        s = s.replace(token, "")
    return "".join(s.split())


def answer_key(span: str | None) -> str | None:
    """A normalized form of an answer span for majority voting: equal numbers get one key ("0.5",
    "\\frac{1}{2}", "$1/2$" -> "1/2"), choice letters theirs ("\\text{(C)}" -> "(C)"), other spans their
    delimiter- and whitespace-free text."""
    if not isinstance(span, str) or not span.strip():
        return None
    number = _as_number(span)
    if number is not None:
        return number.canon if number.value is None else str(number.value)
    letter = choice_letter(span)
    if letter is not None:
        return f"({letter})"
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
    if _PROSE_WORD.search(pred) and len(_NUMBER.findall(pred)) == 1:
        # "Janet makes 18 dollars" read as LaTeX is a product of letters; as text math-verify finds the 18.
        # Only with one number: in "1 \text{ and } 2" it would take the last value of a list.
        pred_parsed = mv.parse(pred, parsing_timeout=None)
        return bool(pred_parsed) and bool(mv.verify(gold_parsed, pred_parsed, timeout_seconds=None))
    return False


def _bounded_math_verify(pred: str, gold: str, timeout_s: float) -> tuple[str, str | None]:
    """math-verify under a deadline in the main thread; a worker process from any other thread.
    Returns (verdict, reason): reason says why for an `error` verdict."""
    if not _in_main_thread():
        return _verify_in_worker(pred, gold, timeout_s)
    try:
        with _time_limit(timeout_s):
            return (TRUE if _math_verify_equal(pred, gold) else FALSE), None
    except _Deadline:
        return ERROR, "timeout"
    except Exception as e:  # noqa: BLE001 - any failure inside sympy/math-verify is an error verdict
        return ERROR, f"exception: {type(e).__name__}"


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
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )
        self.started = False

    def ask(self, pred: str, gold: str, timeout_s: float) -> tuple[str, str | None] | None:
        """The (verdict, reason), or None if the worker died or did not answer in time."""
        self.proc.stdin.write(json.dumps({"pred": pred, "gold": gold, "timeout_s": timeout_s}) + "\n")
        self.proc.stdin.flush()
        # The first answer includes the worker's start-up (importing sympy and math-verify).
        wait = timeout_s + (5.0 if self.started else 60.0)
        ready, _, _ = select.select([self.proc.stdout], [], [], wait)
        line = self.proc.stdout.readline() if ready else ""
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        if not isinstance(answer, list) or len(answer) != 2 or answer[0] not in (TRUE, FALSE, ERROR):
            return None
        self.started = True
        return answer[0], answer[1]

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


_worker_lock = threading.Lock()
_worker: _Worker | None = None


def _verify_in_worker(pred: str, gold: str, timeout_s: float) -> tuple[str, str | None]:
    global _worker
    with _worker_lock:  # one request at a time: the worker answers in order
        try:
            if _worker is None:
                _worker = _Worker()
                atexit.register(_worker.close)
            answer = _worker.ask(pred, gold, timeout_s)
        except (OSError, ValueError):
            answer = None
        if answer is None and _worker is not None:  # stuck or dead: replace it on the next call
            _worker.close()
            _worker = None
        return answer if answer is not None else (ERROR, "timeout (worker)")


def _worker_main() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        verdict = verify_verdict(request["pred"], request["gold"], request["timeout_s"])
        sys.stdout.write(json.dumps(list(verdict)) + "\n")
        sys.stdout.flush()


# ----------------------------------------------------------------------------------------------- the verdict


def verify_verdict(pred_span: str | None, gold: Any, timeout_s: float = VERIFY_TIMEOUT_S) -> tuple[str, str | None]:
    """(verdict, reason): whether an extracted answer span equals the gold answer. Never raises; bounded.

    The verdict is `true`, `false` (wrong, no answer, no gold) or `error` (math-verify timed out or raised;
    the reason says which). Plain numbers on both sides compare exactly (floats rounded to 6 places, as
    math-verify does); a choice-letter gold compares letters; equal normalized text is equal; anything else
    goes through math-verify within `timeout_s` seconds; spans too large for sympy compare as text.
    """
    try:
        if not isinstance(pred_span, str):
            return FALSE, None
        gold_text = normalize_gold(gold)
        pred = pred_span.strip()
        if not pred or gold_text is None:
            return FALSE, None
        a, b = _as_number(pred), _as_number(gold_text)
        if a is not None and b is not None:
            return (TRUE if _numbers_equal(a, b) else FALSE), None
        letter = choice_letter(gold_text)
        if letter is not None:
            pred_letter = choice_letter(pred, leading=True)
            if pred_letter is not None:
                return (TRUE if pred_letter == letter else FALSE), None
        if _canon_text(pred) == _canon_text(gold_text):
            return TRUE, None
        if _is_unsafe(pred) or _is_unsafe(gold_text):
            return FALSE, None  # not equal as text (above), and too big to compare any other way
        return _bounded_math_verify(pred, gold_text, timeout_s)
    except Exception as e:  # noqa: BLE001 - a verifier bug is an error verdict, never a crash of the caller
        return ERROR, f"exception: {type(e).__name__}"


def verify(pred_span: str | None, gold: Any, timeout_s: float = VERIFY_TIMEOUT_S) -> bool:
    """Whether an extracted answer span equals the gold answer (`verify_verdict(...)` is `true`)."""
    return verify_verdict(pred_span, gold, timeout_s)[0] == TRUE


class Check(NamedTuple):
    """One response checked against its gold: the extracted span, the verdict and, for errors, why."""

    extracted: str | None
    verdict: str  # TRUE, FALSE or ERROR
    reason: str | None = None  # "timeout", "timeout (worker)" or "exception: <type>" for an ERROR

    @property
    def correct(self) -> bool:
        return self.verdict == TRUE


def check(completion: Any, gold: Any, policy: str = "strict", timeout_s: float = VERIFY_TIMEOUT_S) -> Check:
    """Extract under `policy`, then verify: the full verdict of one response. Never raises."""
    extracted = extract_answer(completion, policy) if isinstance(completion, str) else None
    verdict, reason = verify_verdict(extracted, gold, timeout_s)
    return Check(extracted, verdict, reason)


def is_correct(completion: str, gold: Any, policy: str = "strict") -> bool:
    """The accuracy verdict of a whole response: `verify(extract_answer(completion, policy), gold)`."""
    return check(completion, gold, policy).correct


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
