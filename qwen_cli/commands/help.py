"""Help pages without typer's type tags: typer prints one beside every option (``--help <bool>``,
``--set <list[str]>``, ``--out <path>``); here an option shows its name and help text only."""

from __future__ import annotations

from typer.core import TyperGroup


class UntaggedHelpGroup(TyperGroup):
    """The ``qwen`` group: its own options and every subcommand's, ``--help`` included, lose the tag."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _untag(self)


def _untag(command) -> None:
    # typer shows an option's metavar, when it has one, instead of the type tag: an empty one hides it
    context = command.context_class(command, **command.context_settings)
    help_option = command.get_help_option(context)
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if param.param_type_name == "option" and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        _untag(sub)
