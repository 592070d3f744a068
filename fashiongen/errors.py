"""The errors a user can fix, and the one wrapper that ends every command on them with one `error: ...` line.

    @command()                                  # main(argv) -> exit code
    def main(argv: list[str] | None = None) -> int:
        options = ArgumentParser(...).parse_args(argv)   # a bad command line: UsageError
        ...                                              # bad input anywhere below: a UserError subclass

Every exception a user can cause by what they typed or pointed at (a config key, a dataset, a model folder, an
output folder, a missing extra...) derives from UserError: a command prints it as exactly one line
`error: MESSAGE` on stderr and exits with its `exit_code` (2), with no traceback. CommandStopped is a deliberate
stop (a signal, a checkpoint saved): its own line and exit code. A command names what else its input may raise
(`input_errors(OSError)`) and its own endings (a handler returning an Ending); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import errno
import functools
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NoReturn, ParamSpec

P = ParamSpec("P")
# Errors of a disk, not of the input: named the same wherever a write fails (checkpoints, exports, outputs).
DISK_ERRORS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied"}


class UserError(Exception):
    """Input a user can fix; a command ends on it with one `error: ...` line and `exit_code`, never a traceback."""

    exit_code = 2


class UsageError(UserError):
    """A bad command line (an unknown option, a value of the wrong type), in argparse's words."""


class CommandStopped(Exception):
    """A command stopped on purpose before its end (a stop signal; its work saved): its message, as it is, on stderr
    and its `exit_code` (128 + the signal's number, the shell's convention)."""

    exit_code = 1


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad command line raises UsageError, which the command's wrapper prints as its one line
    (instead of argparse's usage text and `prog: error:`)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Ending:
    """How a command ends on an exception: the one line it prints on stderr, and its exit code."""

    line: str
    exit_code: int

    def report(self) -> int:
        print(self.line, file=sys.stderr)
        return self.exit_code


# A command's own ending for an exception, or None when the exception is not one of its endings.
Handler = Callable[[Exception], Ending | None]


def one_line(text: object) -> str:
    """A message as one line: its lines stripped and joined by a space (spaces inside a line are kept)."""
    return " ".join(line.strip() for line in str(text).splitlines() if line.strip())


def os_error_line(error: OSError) -> str:
    """'FILE: reason' ('out/model.safetensors: no space left on device'), or the reason alone without a file name."""
    if error.errno is None:
        reason = str(error)
    else:
        reason = DISK_ERRORS.get(error.errno) or (error.strerror or str(error)).lower()
    where = error.filename or error.filename2
    return one_line(f"{where}: {reason}" if where else reason)


def error_line(error: BaseException) -> str:
    """`error: MESSAGE` in one line; an OSError as `error: FILE: reason`."""
    return f"error: {os_error_line(error) if isinstance(error, OSError) and not isinstance(error, UserError) else one_line(error)}"


def user_error(error: Exception) -> Ending | None:
    """Every command's endings: a UserError (one `error:` line, its exit code) and a CommandStopped (its message)."""
    if isinstance(error, UserError):
        return Ending(error_line(error), error.exit_code)
    if isinstance(error, CommandStopped):
        return Ending(one_line(error), error.exit_code)
    return None


def input_errors(*kinds: type[Exception]) -> Handler:
    """A handler for a command whose input also raises these (OSError, ValueError...): one `error:` line, exit 2."""

    def handler(error: Exception) -> Ending | None:
        return Ending(error_line(error), UserError.exit_code) if isinstance(error, kinds) else None

    return handler


def ending(error: Exception, handlers: tuple[Handler, ...]) -> Ending | None:
    """The first ending the command's handlers, then every command's, give `error`; None: a bug, keep the traceback."""
    for handler in (*handlers, user_error):
        if (found := handler(error)) is not None:
            return found
    return None


def command(*handlers: Handler) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a command's main(argv) -> exit code: a user's error (and whatever `handlers` end on) becomes one line
    on stderr and its exit code; any other exception propagates with its traceback."""

    def decorate(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except Exception as error:
                found = ending(error, handlers)
                if found is None:
                    raise
                return found.report()

        return wrapped

    return decorate


@contextmanager
def exits_on_error(*handlers: Handler) -> Iterator[None]:
    """Like `command`, for code that cannot return an exit code (parsing the top command line, a script's imports):
    a user's error prints its one line and raises SystemExit with its exit code."""
    try:
        yield
    except Exception as error:
        found = ending(error, handlers)
        if found is None:
            raise
        raise SystemExit(found.report()) from None


@contextmanager
def raising_user_errors(*kinds: type[Exception]) -> Iterator[None]:
    """Inside, these (OSError, ValueError...) are the user's input, raised on as a UserError with the same one line:
    for a command whose input raises them in one place and whose later code must keep its tracebacks."""
    try:
        yield
    except kinds as error:
        if isinstance(error, UserError):
            raise
        raise UserError(error_line(error).removeprefix("error: ")) from error


__all__ = ["ArgumentParser", "CommandStopped", "DISK_ERRORS", "Ending", "Handler", "UsageError", "UserError", "command", "error_line",
           "exits_on_error", "input_errors", "one_line", "os_error_line",
           "raising_user_errors"]
