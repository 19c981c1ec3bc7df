"""Command-line parsing shared by several commands."""

from __future__ import annotations

from typer.core import TyperCommand


def greedy_command(*options: str) -> type[TyperCommand]:
    """A command class whose ``options`` take every following non-option word as a value."""

    class GreedyCommand(TyperCommand):
        def parse_args(self, ctx, args: list[str]) -> list[str]:
            rewritten: list[str] = []
            current, first = None, False
            for arg in args:
                if arg.startswith("-") and len(arg) > 1:
                    current, first = (arg if arg in options else None), True
                    rewritten.append(arg)
                elif current is not None and not first:
                    rewritten.extend([current, arg])
                else:
                    rewritten.append(arg)
                    first = False
            return super().parse_args(ctx, rewritten)

    return GreedyCommand
