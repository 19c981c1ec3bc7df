"""`qwen extend-context CKPT`: switch on dynamic NTK / LogN / layer-wise windows, or run the Table 3 sweep."""

from __future__ import annotations

from pathlib import Path

import typer

from qwen_cli.commands.options import greedy_command


def register(app: typer.Typer) -> None:
    """Add ``qwen extend-context`` to the app."""

    @app.command("extend-context", cls=greedy_command("--corpus"))
    def extend_context(
        checkpoint: Path = typer.Argument(..., help="Checkpoint directory (ours or any HF Qwen2 directory)."),
        out: Path | None = typer.Option(None, "--out", help="Write a copy of CKPT with the settings switched on."),
        max_length: int | None = typer.Option(None, "--max-length", min=1,
                                              help="New context window (max_position_embeddings) for chat/eval."),
        ntk: str = typer.Option("dynamic", "--ntk", help="dynamic (Qwen's), continuous or none."),
        logn: bool = typer.Option(True, "--logn/--no-logn", help="LogN query scaling past the training length."),
        window: str = typer.Option("none", "--window",
                                   help="Window schedule: W@K (window W for the lowest K layers) or W0,W1,...; "
                                        "W may be a multiple of T (T, 2T)."),
        train_length: int | None = typer.Option(None, "--train-length", min=1,
                                                help="T, the context the model was trained at (default: the "
                                                     "checkpoint's recipe data.seq_len)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
        corpus: list[str] = typer.Option([], "--corpus", help="Run the perplexity sweep on these files/dirs (several may follow one flag)."),
        lengths: str | None = typer.Option(None, "--lengths", help="Comma list of lengths (default: T·2^k up to 16·T)."),
        methods: str = typer.Option(",".join(("plain", "ntk", "ntk+logn", "ntk+logn+window", "ntk-continuous+logn")),
                                    "--methods", help="Sweep rows: plain, ntk, ntk+logn, ntk+logn+window, "
                                                      "ntk-continuous+logn."),
        windows: str | None = typer.Option(None, "--windows", help="Schedules for ntk+logn+window rows, ';'-separated "
                                                          "(default: T in a quarter/half/three quarters of the "
                                                          "layers, 2T in half)."),
        tokens: int = typer.Option(16384, "--tokens", min=1, help="Tokens evaluated per length."),
        plot: Path | None = typer.Option(None, "--plot", help="Write a log-scale plot (PNG) of the sweep."),
        as_json: bool = typer.Option(False, "--json", help="Print the sweep as JSON on stdout."),
    ) -> None:
        """Extend CKPT's context window at inference time (report §2.5): write a checkpoint with the
        techniques on (--out), and/or measure perplexity against length for each technique (--corpus)."""
        from qwen_cli.evaluation.long_context.extend_context import run

        run(checkpoint, out, max_length, ntk, logn, window, train_length, overwrite, corpus, lengths, methods,
            windows, tokens, plot, as_json)

