"""The three service states of failover 0.5 and how they are parsed."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    """UP: doing its job. RECOVER: ready to start. FAIL: cannot be brought up."""

    UP = "UP"
    RECOVER = "RECOVER"
    FAIL = "FAIL"

    def __str__(self) -> str:
        return self.value

    @property
    def ready(self) -> bool:
        """True for the states in which a master blocks the local start (rule 1)."""
        return self is not State.FAIL


class BadState(ValueError):
    """A word that is not one of UP, RECOVER, FAIL."""


def parse_state(word: object) -> State:
    """Parse a state name case-insensitively; raise BadState naming the word otherwise."""
    if isinstance(word, State):
        return word
    text = str(word).strip().upper()
    try:
        return State(text)
    except ValueError:
        raise BadState(f"invalid state {str(word)!r}: expected UP, RECOVER or FAIL") from None
