"""Tool use: the ReAct loop (``react``), tool plugins (``tools``: ``python`` in a sandboxed session,
``calculator``) and the ``qwen chat --tools`` glue (``chat``)."""
