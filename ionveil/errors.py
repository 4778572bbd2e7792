"""The one exception hierarchy of IonVeil.

Callers handle these differently: a ``ValidationError`` is the sender's fault and is never
retried (dead-lettered or answered with an error), a ``TransientError`` is the world's fault
and is retried with back-off, a ``NotFoundError`` answers "no such thing".
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "ConflictError",
    "IonVeilError",
    "NotFoundError",
    "TransientError",
    "ValidationError",
]


class IonVeilError(Exception):
    """Root of every error IonVeil raises on purpose."""

    code: str = "internal"


class ValidationError(IonVeilError, ValueError):
    """Input broke a rule; ``problems`` lists every broken rule, each naming its field."""

    code = "invalid"

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class NotFoundError(IonVeilError, KeyError):
    """The thing asked for does not exist (a ``KeyError`` too, as the contracts require)."""

    code = "not_found"

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message.
        return str(self.args[0]) if self.args else "not found"


class ConflictError(IonVeilError, RuntimeError):
    """The request is valid but clashes with the current state (e.g. already running)."""

    code = "conflict"


class TransientError(IonVeilError):
    """A dependency is unavailable for now; the operation may succeed if retried."""

    code = "unavailable"


class ConfigurationError(IonVeilError):
    """Configuration is missing or wrong; the message names the setting."""

    code = "configuration"
