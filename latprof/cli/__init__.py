"""latprof's command line: a thin Typer app.  Each command lives in its own module, parses flags,
calls the library and prints; user mistakes (`InputError`) become a one-paragraph message and exit
code 2.  Heavy imports (torch) happen inside commands, so `latprof estimate` starts fast."""

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
    _register()
    app()
