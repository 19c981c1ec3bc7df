"""The report's §2.1 data pipeline (``qwen tokenize prepare``) on Hugging Face's datatrove.

Raw text, HTML and WARC go through extraction, language ID, rule-based quality filters, an
offensive-word filter, exact and MinHash-LSH deduplication, a perplexity filter under a reference
checkpoint and per-source up-sampling; instruction data is mixed in after 13-gram decontamination.
``config`` holds the recipe sections, ``stages`` turns them into datatrove stages, ``run`` executes
them (local, Slurm or Ray) and ``manifest`` counts what each rule removed.
"""
