"""``glioseg serve``: the local web app (docs/serve.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from glioseg.cli._common import console, reports_errors, say


def serve(
    host: str = typer.Option(
        "127.0.0.1",
        help="Address to listen on. Anything but 127.0.0.1/localhost needs the token printed at start.",
    ),
    port: int = typer.Option(8000, help="TCP port."),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="A bundled model's name or a run folder (default: brats-2mm if bundled, else demo).",
    ),
    mode: str | None = typer.Option(
        None,
        help="Inference mode as in glioseg predict: default, fast (CPU, quickest), balanced or accurate "
        "(default: the model's recommended mode, as glioseg predict without --mode).",
    ),
    data_dir: Path = typer.Option(
        Path("glioseg-serve"),
        "--data-dir",
        help="Folder of the jobs (uploads, results); kept across restarts.",
    ),
) -> None:
    """Run the local web app: upload a case, segment it on this machine, view and download the results."""
    import uvicorn

    from glioseg.data.io import check_output_folder
    from glioseg.serve.app import ServeConfig, create_app, is_loopback
    from glioseg.serve.runner import SERVE_MODES, load_model

    check_output_folder(data_dir)
    if mode is not None and mode not in SERVE_MODES:
        raise typer.BadParameter(f"--mode must be one of {', '.join(SERVE_MODES)}, got {mode!r}")
    chosen = load_model(model, mode)
    config = ServeConfig(data_dir=data_dir, host=host, port=port)
    app = create_app(config, chosen)
    for note in chosen.notes:
        say("warning", note)
    shown = "127.0.0.1" if is_loopback(host) else host
    address = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}/"
    if config.token:
        console.print(f"token: {config.token}\nopen {address}?token={config.token}")
    else:
        console.print(f"open {address}  (this machine only; stop with Ctrl+C)")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def register(app: typer.Typer) -> None:
    app.command(
        epilog="Example: glioseg serve --data-dir ~/glioseg-jobs, then open http://127.0.0.1:8000/ in a browser."
    )(reports_errors(serve))
