"""One module per ``qwen`` subcommand; each exposes ``register(app)``."""
