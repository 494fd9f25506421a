"""Errors raised by the read side: the event bus, projectors, rebuilds, process managers.

They hang under the runtime's branch of the project's tree::

    ActorsourcingError                 (root, from aggregates)
    └── ActorError                     (runtime, see runtime/_errors.py)
        └── ProjectionError
            ├── ProjectionConfigError  bad projector settings (also ValueError)
            ├── ProjectionFailed       a handler kept failing; the projector stopped
            ├── ProjectionTimeout      wait_for gave up (also TimeoutError)
            ├── ProjectorNotRunning    the projector is not started or was stopped
            ├── UnknownProjector       no projector of that name in the engine (also LookupError)
            ├── ParkedEventNotFound    no parked event at that position (also LookupError)
            └── RebuildFailed          a rebuild stopped; the live read model is untouched
"""

from __future__ import annotations

from runtime._errors import ActorError

__all__ = [
    "ParkedEventNotFound",
    "ProjectionConfigError",
    "ProjectionError",
    "ProjectionFailed",
    "ProjectionTimeout",
    "ProjectorNotRunning",
    "RebuildFailed",
    "UnknownProjector",
]


class ProjectionError(ActorError):
    """Root of every error raised by the bus, projectors and process managers."""


class ProjectionConfigError(ProjectionError, ValueError):
    """A projector or bus was given invalid settings; nothing was started."""


class ProjectionFailed(ProjectionError):
    """A projector's handler kept failing on one event and the projector stopped there.

    The checkpoint stays just before the failed event. The handler's last
    error is chained as ``__cause__`` and kept in :attr:`error`.

    Attributes:
        projector: The projector's name.
        position: The global position of the event that failed.
        event_type: Its type name.
        event_id: Its event id.
        attempts: How many times the handler was tried on it.
        error: The handler's last exception.
    """

    def __init__(
        self,
        projector: str,
        position: int,
        event_type: str,
        event_id: str,
        attempts: int,
        error: BaseException,
    ) -> None:
        super().__init__(
            f"projector {projector!r} stopped at position {position} ({event_type}) after "
            f"{attempts} attempt(s): {type(error).__name__}: {error}"
        )
        self.projector = projector
        self.position = position
        self.event_type = event_type
        self.event_id = event_id
        self.attempts = attempts
        self.error = error


class ProjectionTimeout(ProjectionError, TimeoutError):
    """``wait_for`` did not see the position reflected in time.

    Attributes:
        projector: The projector's name.
        position: The position waited for.
        reached: The position the projector had reflected when it gave up.
        timeout: The timeout in seconds.
    """

    def __init__(self, projector: str, position: int, reached: int, timeout: float) -> None:
        super().__init__(
            f"projector {projector!r} did not reach position {position} within {timeout} s "
            f"(it is at {reached})"
        )
        self.projector = projector
        self.position = position
        self.reached = reached
        self.timeout = timeout


class ProjectorNotRunning(ProjectionError):
    """The projector is not running in an engine (never started, or stopped)."""


class UnknownProjector(ProjectionError, LookupError):
    """The engine holds no projector of that name."""


class ParkedEventNotFound(ProjectionError, LookupError):
    """No event is parked at that position for this projector."""


class RebuildFailed(ProjectionError):
    """A rebuild stopped before the swap; the live read model was not touched."""
