"""Training stages: each supplies a model, batches and a loss to the shared ``qwen_cli.train.trainer``.

A stage module defines a :class:`~qwen_cli.train.stage.Stage` subclass — language-model stages
derive from :class:`~qwen_cli.stages.lm.LanguageModelStage` — and ``SECTIONS``, the recipe
sections it reads (usually ``BASE_SECTIONS`` plus its own, e.g. pretraining's ``[sample]``), so
``qwen_cli.recipe.load_recipe(path, sections=SECTIONS)`` type-checks its recipes. Losses live in
``losses``.
"""
