"""Data pipelines: corpus sources, token shards, chat samples and preference pairs."""
