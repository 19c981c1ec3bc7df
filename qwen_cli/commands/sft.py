"""`qwen sft` (under construction in this session)."""

import typer


def register(app: typer.Typer) -> None:
    """Add the command to the app (not yet implemented)."""
