"""latprof's command line: a thin Typer app.  Each command lives in its own module, parses flags,
calls the library and prints; user mistakes (`InputError`) become a one-paragraph message and exit
code 2, anything else a short message and exit code 1 with a hint to rerun with `--debug` (a
global flag, anywhere on the command line; or LATPROF_DEBUG=1) for the traceback.  Heavy imports
(torch) happen inside commands, so `latprof estimate` starts fast."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="latprof",
    help="Per-operator decode latency look-up tables, whole-model estimates and end-to-end checks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    # imported for their @app.command side effect; each module stays import-light
    from latprof.cli import (  # noqa: F401
        compare,
        decode,
        estimate,
        frontier,
        merge,
        search,
        show,
        sweep,
    )


def main() -> None:
    import os
    import sys

    from latprof.cli.common import DEBUG_ENV, debug_enabled, fail_unexpected

    if "--debug" in sys.argv[1:]:
        sys.argv = [a for a in sys.argv if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    _register()
    try:
        app()
    except Exception as exc:  # the last resort: commands already handle their own errors
        if debug_enabled():
            raise
        try:
            fail_unexpected(exc)
        except typer.Exit as done:
            sys.exit(done.exit_code)
