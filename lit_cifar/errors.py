"""The exception types a user can cause and fix, and the one line a flag the parser refused gets.

The command line prints these as a single line (no traceback) and exits with status 2;
everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """A problem with the user's input (data, flags, files) whose message names the thing and the fix."""


class DataError(UserError):
    """CIFAR-10 could not be found, read or decoded from ``data_dir``."""


class ConfigError(UserError, ValueError):
    """A hyperparameter out of its valid range."""


def parser_error_line(message: str) -> str:
    """jsonargparse's explanation of a refused flag (a dozen lines, nested per type it tried) as one line:
    the flag, the value given and what was expected."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    flag = ".".join(keys[:2]) if len(keys) > 1 and "." not in keys[1] else (keys[0] if keys else "")
    given = re.search(r"Given value: (?!NestedArg|Namespace)(.+?)(?:\. Got value:|$)", message, re.MULTILINE) or re.search(
        r"Got value: (?!Namespace)(\S+)$", message, re.MULTILINE)
    choices = re.search(r"Expected a typing\.Literal\[([^\]]+)\]", message)
    expected = re.search(r"Expected an? <class '(\w+)'>", message)
    refused = re.search(r"Option '(\w+)' is not accepted", message)
    if choices:
        reason = "expected one of " + ", ".join(choice.strip(" '\"") for choice in choices.group(1).split(","))
    elif refused:
        flag, given = f"{flag}.{refused.group(1)}", None
        reason = f"not an argument of the chosen {flag.split('.')[1]} (is one chosen? e.g. --{'.'.join(flag.split('.')[:2])} StepLR)"
    elif expected:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
        reason = "expected " + kind.get(expected.group(1), f"a {expected.group(1)}")
    else:  # e.g. a missing config file, unrecognized arguments: their first line says it
        first = re.sub(r'^Parser key "[^"]+":\s*', "", message.strip()).splitlines()[0]
        reason = re.sub(r"\s+", " ", first).strip()
    subject = " ".join(part for part in (f"--{flag}" if flag else "", given.group(1).strip() if given else "") if part)
    return f"{subject}: {reason}" if subject else reason
