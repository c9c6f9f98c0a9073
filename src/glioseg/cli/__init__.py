"""The ``glioseg`` command: one sub-command per pipeline stage.

Heavy libraries (torch, MONAI) are imported inside the commands so that ``glioseg
--help`` answers at once.
"""

from __future__ import annotations

import typer

from glioseg.cli import (
    data_commands,
    evaluate_commands,
    experiment_commands,
    import_commands,
    infer_commands,
    model_commands,
    postprocess_commands,
    train_commands,
    transfer_commands,
)

app = typer.Typer(
    name="glioseg",
    help="Glioma segmentation on multi-parametric MRI (t1n, t1c, t2w, t2f) for small, low-quality cohorts.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from glioseg._version import __version__

        typer.echo(f"glioseg {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print glioseg's version and exit."
    ),
) -> None:
    pass


data_commands.register(app)
train_commands.register(app)
infer_commands.register(app)
model_commands.register(app)
evaluate_commands.register(app)
transfer_commands.register(app)
import_commands.register(app)
postprocess_commands.register(app)
experiment_commands.register(app)


def main() -> None:
    """Entry point of the ``glioseg`` console script."""
    from glioseg.runtime import request_huge_pages

    request_huge_pages()  # before torch's first large allocation (see glioseg.runtime)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
