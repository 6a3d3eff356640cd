"""Fault injection for the simulator: from tests, from the URI (`fault=`) and from
the `faults` control file (nvmefs.fs.faults).

A rule matches commands by queue and opcode and fires `count` times (None:
until cleared). Kinds:
  delay    complete normally `delay` seconds after the command arrived (at most
           MAX_DELAY, so nothing waits without a bound)
  timeout  never complete; the host's timeout aborts it
  drop     carried (its effects happen), its completion lost: an abort finds
           nothing, so the host's timeout resets the controller
  status   complete with `status` (a 15-bit status) without executing
  fatal    set Controller Fatal Status: every command fails until a reset
  remove   surprise removal: every command and reset fails from now on

One rule as text (the `fault=` URI option, a line of the control file):

    KIND:QUEUE:OPCODE:COUNT[:ARG]

QUEUE is `admin`, `io` or `*` (any; `any` also works), OPCODE a number (0x02,
2) or `*`, COUNT a positive number of commands or `*` (until cleared). ARG is
required for delay, seconds (`0.5`) or milliseconds (`500ms`), and for status:
a 15-bit status number as completions show it (SCT bits 10:8, SC 7:0, DNR bit
14: `0x4281`) or a status name (`READ_ERROR`, `INVALID_FIELD`, optionally with
`+dnr`). The other kinds take no ARG. `describe` gives a rule back in this form. A
control text (`Faults.apply`) is such rules, `clear` lines, and conditions of
the controller: `temperature:KELVIN` sets its composite temperature (past a
threshold of feature 04h: a critical warning and a SMART / Health event).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...spec import status as S
from ...spec.opcodes import ADMIN, IO
from ...spec.queue import Command

KINDS = ("delay", "timeout", "drop", "status", "fatal", "remove")
QUEUES = (ADMIN, IO)
MAX_DELAY = 600.0            # seconds: a delay fault never holds a command longer
MAX_COUNT = 0xFFFFFFFF
MAX_RULES = 256              # active rules per controller
TEMPERATURE = (200, 400)     # kelvin a `temperature:` line may set
_ANY = ("*", "any")


class FaultError(ValueError):
    """A fault rule that cannot be: bad syntax or out of range."""


class FaultsFull(FaultError):
    """MAX_RULES rules are active already."""


@dataclass
class Fault:
    kind: str
    queue: str | None = None
    opcode: int | None = None
    status: int = 0
    delay: float = 0.0
    count: int | None = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FaultError(f"unknown fault {self.kind!r}; known: {', '.join(KINDS)}")
        if self.queue not in (None, *QUEUES):
            raise FaultError(f"queue must be {' or '.join(QUEUES)} (or any), not {self.queue!r}")
        if self.opcode is not None and not 0 <= self.opcode <= 0xFF:
            raise FaultError(f"opcode {self.opcode} is outside 0..0xff")
        if self.count is not None and not 1 <= self.count <= MAX_COUNT:
            raise FaultError(f"count must be 1..{MAX_COUNT} (or * for until cleared)")
        if self.kind == "delay":
            if not (isinstance(self.delay, (int, float)) and math.isfinite(self.delay)
                    and 0 <= self.delay <= MAX_DELAY):
                raise FaultError(f"a delay is 0..{MAX_DELAY:g} seconds, not {self.delay!r}")
        elif self.delay:
            raise FaultError("only a delay fault takes a delay")
        if self.kind == "status":
            if not 0 <= self.status <= 0x7FFF or not self.status & 0x7FF:
                raise FaultError(f"status {self.status:#x} is not a 15-bit error status")
        elif self.status:
            raise FaultError("only a status fault takes a status")

    def matches(self, queue: str, cmd: Command) -> bool:
        return (self.queue in (None, queue)) and (self.opcode in (None, cmd.opcode))

    def describe(self) -> str:
        """The rule as a line of `parse_fault`'s syntax (COUNT: what is left)."""
        words = [self.kind, self.queue or "*",
                 "*" if self.opcode is None else f"{self.opcode:#04x}",
                 "*" if self.count is None else str(self.count)]
        if self.kind == "delay":
            words.append(repr(float(self.delay)))
        elif self.kind == "status":
            words.append(f"{self.status:#06x}")
        return ":".join(words)


def _number(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise FaultError(f"{what} must be a number or *, not {text!r}") from None


def _delay(text: str) -> float:
    scale, number = (1e-3, text[:-2]) if text.endswith("ms") else (1.0, text.removesuffix("s"))
    try:
        value = float(number) * scale
    except ValueError:
        raise FaultError(f"a delay is seconds (0.5) or milliseconds (500ms), not {text!r}") \
            from None
    if not math.isfinite(value):
        raise FaultError(f"a delay is 0..{MAX_DELAY:g} seconds, not {text!r}")
    return value


_STATUS_BY_NAME = {st.name: (sct, sc) for (sct, sc), st in S.STATUS.items()}


def _status(text: str) -> int:
    name, plus, flag = text.partition("+")
    if plus and flag.lower() != "dnr":
        raise FaultError(f"a status name takes only +dnr, not {text!r}")
    if name.upper() in _STATUS_BY_NAME:
        return S.make_status(*_STATUS_BY_NAME[name.upper()], dnr=bool(plus))
    if plus:
        raise FaultError(f"unknown status name {name!r}")
    try:
        return int(text, 0)
    except ValueError:
        raise FaultError(f"a status is a number (0x4281) or a name (READ_ERROR), not {text!r}") \
            from None


def _temperature(text: str) -> int:
    lo, hi = TEMPERATURE
    try:
        kelvin = int(text.strip(), 0)
    except ValueError:
        kelvin = -1
    if not lo <= kelvin <= hi:
        raise FaultError(f"temperature:KELVIN takes {lo}..{hi}, not {text.strip()!r}")
    return kelvin


def parse_fault(text: str) -> Fault:
    """One rule from `KIND:QUEUE:OPCODE:COUNT[:ARG]`; FaultError if it is not one."""
    words = text.strip().split(":")
    if not 4 <= len(words) <= 5 or not all(words):
        raise FaultError(f"a fault is KIND:QUEUE:OPCODE:COUNT[:ARG], not {text.strip()!r}")
    kind, queue, opcode, count = (w.strip() for w in words[:4])
    arg = words[4].strip() if len(words) == 5 else None
    kind, queue = kind.lower(), queue.lower()
    if kind not in KINDS:
        raise FaultError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
    if (arg is None) != (kind not in ("delay", "status")):
        raise FaultError(f"a {kind} fault takes {'an ARG' if arg is None else 'no ARG'}")
    return Fault(kind,
                 queue=None if queue in _ANY else queue,
                 opcode=None if opcode in _ANY else _number(opcode, "OPCODE"),
                 count=None if count in _ANY else _number(count, "COUNT"),
                 delay=_delay(arg) if kind == "delay" else 0.0,
                 status=_status(arg) if kind == "status" else 0)


class Faults:
    def __init__(self, rules: list[Fault] | None = None) -> None:
        self.rules: list[Fault] = []
        self.fired = 0
        for rule in rules or ():
            self.add(rule)

    def add(self, fault: Fault) -> Fault:
        if len(self.rules) >= MAX_RULES:
            raise FaultsFull(f"{MAX_RULES} faults are armed already; clear some first")
        self.rules.append(fault)
        return fault

    def inject(self, kind: str, **kwargs) -> Fault:
        """Arm a rule: inject("delay", queue="io", opcode=0x02, delay=0.5, count=3)."""
        return self.add(Fault(kind, **kwargs))

    def apply(self, text: str) -> dict[str, int]:
        """Carry out a control text: one rule, `clear` or condition per line (blank
        lines are skipped), in order; the conditions set (`temperature`) are
        returned for the controller. All or nothing: a bad line (FaultError) or
        more rules than fit (FaultsFull) changes nothing."""
        rules = list(self.rules)
        conditions: dict[str, int] = {}
        for line in text.splitlines():
            word = line.strip().lower()
            if word == "clear":
                rules.clear()
            elif word.startswith("temperature:"):
                conditions["temperature"] = _temperature(word.partition(":")[2])
            elif word:
                rules.append(parse_fault(line))
        if len(rules) > MAX_RULES:
            raise FaultsFull(f"at most {MAX_RULES} faults can be armed")
        self.rules[:] = rules
        return conditions

    def take(self, queue: str, cmd: Command) -> Fault | None:
        """The first rule matching this command, used up once."""
        for fault in self.rules:
            if fault.matches(queue, cmd):
                if fault.count is not None:
                    fault.count -= 1
                    if fault.count <= 0:
                        self.rules.remove(fault)
                self.fired += 1
                return fault
        return None

    def describe(self) -> str:
        """The armed rules, one line each."""
        return "".join(f"{rule.describe()}\n" for rule in self.rules)

    def clear(self) -> None:
        self.rules.clear()
