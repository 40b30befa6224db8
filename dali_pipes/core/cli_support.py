"""What every decal command line shares: the parser, flag types, and one-line errors.

``decal`` (``decal/cli.py``), ``decal train`` (``trainers/cli.py``), ``decal stream`` and
``decal serve`` all build their parsers from :class:`CliParser` (sub-parsers inherit it), so:

* a user's mistake (a bad flag value, a missing file, a config value that does not fit, a
  dataset error) prints **one line** on stderr, ``decal <command>: error: <what to do>``,
  and exits with status 2 (status 1 for a :class:`~decal.dali_pipes.core.errors.DatasetError`:
  the data, not the command, is wrong); ``--debug`` shows the traceback instead;
* every flag's help ends with its default, and docstrings used as descriptions are shown
  without their reST markup.

It lives in ``dali_pipes`` (the lowest layer with a command line) so that the server and the
trainers can use it without importing the face.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any, Callable, NoReturn, Sequence

from .backend import DEVICE_CHOICES, parse_device
from .errors import DatasetError
from .options import OptionError

__all__ = [
    "CliParser",
    "HelpFormatter",
    "UsageError",
    "add_device_flag",
    "device_flag",
    "jitter_flag",
    "positive_int",
    "run_handler",
    "split_debug",
    "strip_rest",
]

#: Exit status of a user's mistake (bad flag, option or config value; missing file).
EXIT_USAGE = 2
#: Exit status when the data are at fault (a DatasetError).
EXIT_DATA = 1


class UsageError(OptionError):
    """A command-line mistake; the message says what to do."""


_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def strip_rest(text: str) -> str:
    """``text`` without reST markup: roles (``:class:`~a.B``` → ``B``), double back-quotes,
    ``::`` literal markers and ``====`` table rules."""

    def role(match: re.Match[str]) -> str:
        target = match.group(1)
        return target.rsplit(".", 1)[-1] if match.group(0).split("`", 1)[1].startswith("~") else target

    text = _ROLE.sub(role, text).replace("``", "")
    lines = [line for line in text.splitlines() if not re.fullmatch(r"\s*=[= ]*\s*", line)]
    return "\n".join(re.sub(r"(?<=\S)::$", ":", line).replace(" ::", ":") for line in lines)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks but lose reST markup; every flag with a default
    other than None/False shows it (flags defaulting to None say their default in the help)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(strip_rest(text), width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "%(default)" in help_text or "default:" in help_text:
            return help_text
        return super()._get_help_string(action) or ""


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line and exit status 2, and whose flags all
    carry help (their name, when none is given) so their default shows in ``--help``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("help") is None and args and str(args[0]).startswith("-"):
            kwargs["help"] = str(args[0]).lstrip("-").replace("-", " ")
        return super().add_argument(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        one_line = " ".join(message.split())
        self.exit(EXIT_USAGE, f"{self.prog}: error: {one_line} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value}")
    return value


def jitter_flag(text: str) -> str | tuple[float, float]:
    """argparse type of ``--jitter``: ``lsj``, ``ssj``, ``none`` or ``MIN,MAX`` (e.g. ``0.5,1.5``)."""
    if text.lower() in ("lsj", "ssj", "none"):
        return text.lower()
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected lsj, ssj, none or MIN,MAX (e.g. 0.5,1.5), got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"MIN,MAX needs 0 < MIN <= MAX, got {text!r}")
    return (low, high)


def device_flag(text: str) -> str:
    """argparse type of ``--device``: decal's device vocabulary (:func:`parse_device`)."""
    try:
        parse_device(text)
    except OptionError:
        raise argparse.ArgumentTypeError(f"expected {DEVICE_CHOICES}, got {text!r}") from None
    return text.lower()


def add_device_flag(parser: Any, default: str | None = "auto", what: str = "where the pipeline runs", default_text: str | None = None) -> None:
    """``--device`` with decal's vocabulary, on a parser or an argument group; the help
    ends with ``default_text`` when the default is not the flag's own value."""
    suffix = f" (default: {default_text})" if default_text else ""
    parser.add_argument("--device", type=device_flag, default=default, metavar="DEVICE", help=f"{what}: {DEVICE_CHOICES}{suffix}")


def split_debug(argv: Sequence[str] | None) -> tuple[list[str], bool]:
    """``argv`` (default ``sys.argv[1:]``) without ``--debug`` (accepted anywhere), and
    whether it was there."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    return [a for a in args if a != "--debug"], debug


def run_handler(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace, prog: str, debug: bool) -> int:
    """Run a command's handler; a user's mistake becomes one line on stderr and exit
    status 2 (1 for a DatasetError) unless ``debug``, when it propagates with its traceback."""
    try:
        return int(handler(args) or 0)
    except DatasetError as error:
        if debug:
            raise
        _say(prog, error)
        return EXIT_DATA
    except (ValueError, TypeError, OSError) as error:
        if debug:
            raise
        _say(prog, error)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _say(prog: str, error: BaseException) -> None:
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and str(error.filename) not in text:
        text = f"{error.filename}: {text}"
    print(f"{prog}: error: {text} (--debug shows the traceback)", file=sys.stderr)
