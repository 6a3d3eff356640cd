"""Fault injection for the simulator (tests drive these; nothing else does).

A rule matches commands by queue and opcode and fires `count` times
(None: until cleared). Kinds:
  delay    complete normally after `delay` seconds
  timeout  never complete; the host's timeout aborts it
  status   complete with `status` (a 15-bit status) without executing
  fatal    set Controller Fatal Status: every command fails until a reset
  remove   surprise removal: every command and reset fails from now on
"""

from __future__ import annotations

from dataclasses import dataclass

from ...spec.queue import Command

KINDS = ("delay", "timeout", "status", "fatal", "remove")


@dataclass
class Fault:
    kind: str
    queue: str | None = None
    opcode: int | None = None
    status: int = 0
    delay: float = 0.0
    count: int | None = 1

    def matches(self, queue: str, cmd: Command) -> bool:
        return (self.queue in (None, queue)) and (self.opcode in (None, cmd.opcode))


class Faults:
    def __init__(self) -> None:
        self.rules: list[Fault] = []
        self.fired = 0

    def inject(self, kind: str, **kwargs) -> Fault:
        if kind not in KINDS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(KINDS)}")
        fault = Fault(kind, **kwargs)
        self.rules.append(fault)
        return fault

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

    def clear(self) -> None:
        self.rules.clear()
