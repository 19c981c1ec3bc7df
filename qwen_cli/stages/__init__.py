"""Training stages: each supplies a model, batches and a loss to the shared ``qwen_cli.trainer``.

A stage module defines a ``Stage`` subclass and ``SECTIONS`` — the recipe sections it reads
(usually ``BASE_SECTIONS`` plus its own, e.g. pretraining's ``[sample]``) — so
``qwen_cli.recipe.load_recipe(path, sections=SECTIONS)`` type-checks its recipes.
"""
