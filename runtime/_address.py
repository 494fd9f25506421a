"""Actor addresses: ``Address("Account", "42")``, written ``Account/42``."""

from __future__ import annotations

from typing import Any, NoReturn

from runtime._errors import InvalidAddress

__all__ = ["Address"]

# Streams are named "{Category}-{id}" and the stores cap a name at 200
# characters (stores.MAX_STREAM_NAME); check here so bad input fails at the
# edge, before any actor exists.
_MAX_STREAM = 200


class Address:
    """The address of one aggregate instance: its category and its id.

    Immutable and hashable. The category is the aggregate's ``category``; the
    stream in the log is ``"{category}-{id}"``.

    Args:
        category: The aggregate category (non-empty, no ``-`` or ``/``).
        id: The instance id (non-empty, printable).

    Raises:
        InvalidAddress: either part is not a usable non-empty string.
    """

    __slots__ = ("_hash", "category", "id", "stream")

    category: str
    id: str
    stream: str
    """The stream name in the event log, ``"{category}-{id}"``."""
    _hash: int

    def __init__(self, category: str, id: str) -> None:
        if not isinstance(category, str) or not category:
            raise InvalidAddress(f"address category must be a non-empty str, not {category!r}")
        if not isinstance(id, str) or not id:
            raise InvalidAddress(f"address id must be a non-empty str, not {id!r}")
        if "-" in category or "/" in category:
            raise InvalidAddress(f"address category {category!r} must not contain '-' or '/'")
        stream = f"{category}-{id}"
        if len(stream) > _MAX_STREAM or not stream.isprintable():
            raise InvalidAddress(
                f"address {category}/{id!r} is over {_MAX_STREAM} characters or not printable"
            )
        object.__setattr__(self, "category", category)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "stream", stream)
        object.__setattr__(self, "_hash", hash((category, id)))

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse ``"Category/id"`` (the id may itself contain ``/``).

        Raises:
            InvalidAddress: ``text`` is not a str of that shape.
        """
        if not isinstance(text, str):
            raise InvalidAddress(f"an address is written 'Category/id', not {text!r}")
        category, sep, id = text.partition("/")
        if not sep:
            raise InvalidAddress(f"an address is written 'Category/id', not {text!r}")
        return cls(category, id)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Address is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Address is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Address:
            return NotImplemented
        return self.id == other.id and self.category == other.category

    def __repr__(self) -> str:
        return f"Address({self.category!r}, {self.id!r})"

    def __str__(self) -> str:
        return f"{self.category}/{self.id}"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Address, (self.category, self.id))
