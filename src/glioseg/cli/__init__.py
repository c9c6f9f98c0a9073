"""The ``glioseg`` command: one sub-command per pipeline stage.

Heavy libraries (torch, MONAI) are imported inside the commands so that ``glioseg
--help`` answers at once.
"""

from __future__ import annotations

import typer
import typer.core

from glioseg.cli import (
    data_commands,
    evaluate_commands,
    experiment_commands,
    import_commands,
    infer_commands,
    model_commands,
    postprocess_commands,
    prepare_commands,
    serve_commands,
    train_commands,
    transfer_commands,
)


def _flags_take_no_value() -> None:
    """Show boolean flags in help as plain flags (``--report``, ``--window-norm/--global-norm``).

    typer's rich help labels every flag ``<bool>`` as if it took a value, but ``--report true`` is
    rejected (typer's plain-text help already leaves the type out for flags). Applied once, here.
    """
    option = typer.core.TyperOption
    if getattr(option.display_type_rich, "_glioseg", False):
        return
    original = option.display_type_rich

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else original(self, ctx)

    display_type_rich._glioseg = True  # type: ignore[attr-defined]
    option.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()

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
prepare_commands.register(app)
train_commands.register(app)
infer_commands.register(app)
model_commands.register(app)
evaluate_commands.register(app)
transfer_commands.register(app)
import_commands.register(app)
postprocess_commands.register(app)
experiment_commands.register(app)
serve_commands.register(app)


def main() -> None:
    """Entry point of the ``glioseg`` console script."""
    from glioseg.runtime import request_huge_pages

    request_huge_pages()  # before torch's first large allocation (see glioseg.runtime)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
