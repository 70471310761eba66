"""The ``gisp`` command: one dispatcher, each command group in its own module.

Command modules import their heavy dependencies (torch, FastAPI, Celery) inside their handlers, so
``gisp jobs status`` starts fast and ``gisp prune`` does not load the web stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from collections.abc import Sequence

COMMAND_MODULES = (
    "core.cli.engine_commands",
    "core.cli.eval_command",
    "core.cli.service_commands",
    "core.cli.demo_command",
    "core.cli.export_command",
)


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad flags are one line naming the flag and where to look, not a usage dump."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="gisp", description="Global Iterative Structured Pruning for LLMs")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        register = getattr(module, "add_parsers", None) or module.add_parser
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a bad flag already reported in one line
        return int(exit_.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    from core.errors import UserInputError

    try:
        return int(args.handler(args) or 0)
    except UserInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # a bug or an environment problem: one line, the traceback only with -v
        logging.getLogger(__name__).debug("unexpected error", exc_info=True)
        detail = str(error).splitlines()[0][:300] if str(error) else ""
        print(f"error: {type(error).__name__}: {detail} (rerun with -v for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
