"""Training: the one model-agnostic loop and the pieces every loop (the trainer, PPO's) reuses.

``trainer`` (the loop), ``stage`` (the protocol a stage implements), ``optim`` (AdamW groups, the
schedule), ``checkpointing`` (run-directory checkpoints, resume), ``distributed`` (torchrun,
FSDP2, full state dicts), ``progress`` (rich bar, ``metrics.jsonl``), ``run_control`` (seeds,
signals), ``mfu`` (matmul peak).
"""
