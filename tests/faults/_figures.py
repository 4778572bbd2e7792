"""Figures the fault and security suites report at the end of a run (issue 7's closing note)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["FIGURES", "Figures"]


@dataclass
class Figures:
    """Running totals over every fault and security test of the session."""

    faults: int = 0
    published: int = 0
    lost: int = 0
    duplicates: int = 0
    bad_inputs: int = 0
    details: list[str] = field(default_factory=list)
    printed: bool = False

    def any(self) -> bool:
        """Whether anything was recorded."""
        return bool(self.faults or self.published or self.bad_inputs)

    def record(self, test: str, *, faults: int, published: int, lost: int, dups: int) -> None:
        """Add one fault test's outcome."""
        self.faults += faults
        self.published += published
        self.lost += lost
        self.duplicates += dups
        self.details.append(
            f"  {test}: faults={faults} published={published} lost={lost} duplicates={dups}"
        )

    def summary(self) -> str:
        """The closing-note lines."""
        head = (
            f"IonVeil reliability figures: faults injected={self.faults} events published="
            f"{self.published} lost={self.lost} duplicates={self.duplicates} bad inputs tried="
            f"{self.bad_inputs}"
        )
        return "\n".join([head, *self.details])


FIGURES = Figures()
