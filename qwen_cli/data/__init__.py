"""Data pipelines: token shards (written by ``encode``, read as batches by ``shards``), chat data
(``chat_format`` reads JSONL conversations, ``chat_template`` renders ChatML — also used by
inference —, ``sft_packing`` lays them out as training rows). Raw corpus reading is
``qwen_cli.corpus``.
"""
