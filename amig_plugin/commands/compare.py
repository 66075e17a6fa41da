"""`amig compare` (to be filled in)."""


def add_commands(subparsers) -> None:
    """No commands yet."""
