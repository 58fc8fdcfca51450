"""The parser every `harken` command is built with: one help layout and the global options.

Owns: `Parser` (an `argparse.ArgumentParser` whose sub-parsers are `Parser`s too, so every
command and group gets the same help formatter and accepts the global options before or after
its name), `HelpFormatter` (defaults shown, descriptions wrapped paragraph by paragraph) and the
global options themselves (`GLOBAL_OPTIONS_HELP`). Does not own: any command's options (the
command modules of `harken.cli`).
"""

from __future__ import annotations

import argparse
import textwrap

# What `harken --help` says about the options every command accepts.
GLOBAL_OPTIONS_HELP = "-v/--verbose is accepted before or after any command name."


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless it is None, False or empty (an option without
    a value to show says what it defaults to in its help). Descriptions and epilogs are wrapped
    paragraph by paragraph (paragraphs split by a blank line); a paragraph whose lines are indented
    (a listing, an example) is kept as written."""

    def __init__(self, prog: str, **kwargs) -> None:
        kwargs.setdefault("max_help_position", 30)
        super().__init__(prog, **kwargs)

    def _get_help_string(self, action: argparse.Action) -> str:
        default = action.default
        if default is None or default is False or default == [] or default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:
        # Option names, preset and benchmark names hold hyphens: never break a line there.
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                         subsequent_indent=indent, break_on_hyphens=False))
        return "\n\n".join(out)


def add_global_options(parser: argparse.ArgumentParser, default) -> None:
    """`-v/--verbose`; `default` is argparse.SUPPRESS on sub-parsers, so that a sub-parser which
    was not given the option leaves the value another level set."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default,
                        help="debug logging (accepted before or after the command name)")


class Parser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` with `HelpFormatter` and the global options.

    Sub-parsers made with `add_subparsers().add_parser` are `Parser`s as well (argparse creates
    them with the class of their parent), so the layout and the global options are set here once.
    """

    def __init__(self, *args, global_default=argparse.SUPPRESS, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        add_global_options(self, global_default)
