"""The actor runtime."""

__all__: list[str] = []
