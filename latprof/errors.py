"""Errors that reach the user.

`InputError` is a user mistake (bad flag, malformed config, unknown operator, LUT row missing):
the CLI prints its message as one paragraph and exits with code 2, never a traceback.
`BackendUnavailable` is an `InputError` too: asking for a backend this machine cannot run is
something the user can change, and the message says why it cannot run.
"""

from __future__ import annotations


class InputError(Exception):
    """A problem with what the user asked for; exit code 2."""


class BackendUnavailable(InputError):
    """A named backend cannot run here; the message says why.  Never fall back silently."""
