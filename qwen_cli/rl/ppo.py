"""``qwen rlhf ppo``: the PPO loop of report §3.2.2 with four models, exact resume and live metrics.

One step: take ``prompts_per_step`` queries (a seeded permutation, so the step number fixes them),
sample ``samples_per_prompt`` responses each with the policy (top-p, the KV-cached engine), score
them (policy and reference log-probabilities, values, reward-model score at the end token),
normalise the scores by their running mean (``reward_norm``: the report's reading; ``mean_std``
also divides by the running deviation), charge every token
``kl_coef · (log π − log π_ref)``, estimate advantages with GAE (whitened) and run ``epochs``
passes of mini-batch updates: the clipped value loss always, the clipped policy loss (plus
``pretrain_coef`` × the LM loss on pretraining shards) only after ``value_only_steps``. Policy and
value share one AdamW with their own learning rates; during the value-only steps the policy has
no gradient, so AdamW leaves it bit-identical.

Run directory: ``recipe.toml``, ``metrics.jsonl``, ``checkpoints/step_N`` (the policy as a chat
model directory, ``value/`` as a reward-model directory, optimizer, RNG and the loop's position,
running reward moments and pretraining-data position), ``final/`` (the policy) and ``curves.png``.
A resumed run repeats exactly what the uninterrupted one would have done (generation is seeded
per step). PPO runs in one process on one device.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from qwen_cli.checkpoint import load_model
from qwen_cli.checkpoint import train_state as ts
from qwen_cli.checkpoint.files import write_checksums
from qwen_cli.checkpoint.model_dir import read_model_state, write_model_files
from qwen_cli.checkpoint.reward_dir import load_reward_model, read_reward_state, write_reward_files
from qwen_cli.data.chat_template import ChatTemplate
from qwen_cli.data.preference import read_prompts
from qwen_cli.data.shards import BatchLayout, EpochPermutation, MixedBatches, ShuffledBatches, TokenWindows
from qwen_cli.errors import RunFailed, UserError
from qwen_cli.evaluation.reward.preference import exact_match, gold_hits, ranking_accuracy
from qwen_cli.fsutil import atomic_file
from qwen_cli.interop.qwen2 import write_generation_config
from qwen_cli.kernels.cross_entropy import linear_cross_entropy
from qwen_cli.model.heads import ScalarHeadModel
from qwen_cli.recipe import Recipe
from qwen_cli.rl.advantages import RunningMoments, gae, whiten
from qwen_cli.rl.curves import plot_curves
from qwen_cli.rl.ppo_losses import policy_loss, shaped_rewards, value_loss
from qwen_cli.rl.rollout import Rollout, end_scores, response_logprobs, response_values, sample, score
from qwen_cli.tokenizer import load_tokenizer
from qwen_cli.train import checkpointing as ckpt
from qwen_cli.train import distributed as dist
from qwen_cli.train.optim import lr_at, param_groups
from qwen_cli.train.progress import MetricsWriter, RunProgress
from qwen_cli.train.run_control import StopSignals, seed_everything
from qwen_cli.train.trainer import RESUMABLE

VALUE_DIR = "value"
CURVES_FILE = "curves.png"
LIVE_KEYS = ("reward", "reward_norm", "kl", "value_loss", "policy_clipfrac", "value_clipfrac", "response_len")


@dataclass
class Prompt:
    ids: list[int]
    answer: str | None  # gold answer for exact-match scoring, when the prompt file has one


class PPORun:
    """Builds the four models from the recipe and runs PPO into ``run_dir``."""

    def __init__(self, recipe: Recipe, run_dir: Path, resume: bool = False, overwrite: bool = False,
                 console: Console | None = None) -> None:
        ckpt.check_run_dir(run_dir, resume, overwrite)
        self.recipe, self.run_dir, self.resume, self.overwrite = recipe, Path(run_dir), resume, overwrite
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.cfg = recipe.ppo
        models = recipe.models
        for key in ("policy", "reward"):
            if not getattr(models, key):
                raise UserError(f"{recipe.source}: models.{key} is not set")
        if not self.cfg.prompts:
            raise UserError(f"{recipe.source}: ppo.prompts is empty (JSONL files of {{\"prompt\": ...}})")
        self.device = dist.init(recipe.train.device, recipe.distributed.backend).device
        self.tokenizer = load_tokenizer(models.policy)
        self.template = ChatTemplate(self.tokenizer, self.cfg.default_system)
        self.end_id, self.pad_id = self.tokenizer.im_end_id, self.tokenizer.eot_id
        self.total_steps = recipe.train.steps
        if self.total_steps <= 0:
            raise UserError(f"{recipe.source}: train.steps must be set to a positive number of PPO steps")

    # ----- setup -------------------------------------------------------------------------
    def _prompts(self, files: list[str]) -> list[Prompt]:
        room = self.policy.config.max_position_embeddings - self.cfg.max_new_tokens - 1
        if room < 8:
            raise UserError(f"{self.recipe.source}: ppo.max_new_tokens = {self.cfg.max_new_tokens} leaves no room for "
                            f"a prompt in max_position_embeddings = {self.policy.config.max_position_embeddings}")
        out = []
        for path in files:
            for messages, record in read_prompts(path):
                ids = self.template.prompt(messages, max_len=room)[-room:]
                answer = record.get("answer")
                out.append(Prompt(ids, None if answer is None else str(answer)))
        return out

    def _pretrain_batches(self):
        data = self.recipe.data
        if self.cfg.pretrain_coef == 0:
            return None
        layout = BatchLayout(0, 1, self.cfg.pretrain_sequences, 1)
        if data.sources:
            windows = [TokenWindows(s.shards, "train", data.seq_len) for s in data.sources]
            return MixedBatches(windows, [s.weight for s in data.sources], layout, self.recipe.train.seed,
                                [f"data.sources[{i}] ({s.shards})" for i, s in enumerate(data.sources)])
        if not data.shards:
            raise UserError(f"{self.recipe.source}: ppo.pretrain_coef > 0 needs pretraining shards "
                            "(data.shards or data.sources)")
        return ShuffledBatches(TokenWindows(data.shards, "train", data.seq_len), layout, self.recipe.train.seed)

    def _build(self) -> None:
        seed_everything(self.recipe.train.seed)
        models = self.recipe.models
        self.policy = load_model(models.policy).to(self.device).eval()
        self.reference = load_model(models.policy).to(self.device).eval().requires_grad_(False)
        self.reward = load_reward_model(models.reward, device=self.device).requires_grad_(False)
        if self.reward.config.vocab_size != self.policy.config.vocab_size:
            raise UserError(f"{models.reward}: vocabulary of {self.reward.config.vocab_size} does not match the "
                            f"policy's {self.policy.config.vocab_size} ({models.policy})")
        if models.value_init == "reward":
            self.value = load_reward_model(models.reward, device=self.device)
        else:
            self.value = ScalarHeadModel(load_model(models.policy), bias=False).to(self.device)
        self.value.eval()  # dropout off in every model: PPO's ratios compare the same function
        self.models = nn.ModuleDict({"policy": self.policy, "value": self.value})
        optim = self.recipe.optim
        groups = []
        for name, lr in (("policy", self.cfg.policy_lr), ("value", self.cfg.value_lr)):
            for group in param_groups(self.models[name], optim.weight_decay):
                groups.append({**group, "lr": lr, "peak_lr": lr})
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(optim.betas), eps=optim.eps, foreach=True)
        self.params = [p for p in self.models.parameters() if p.requires_grad]
        self.prompts = self._prompts(self.cfg.prompts)
        self.eval_prompts = self._prompts([self.cfg.eval_prompts]) if self.cfg.eval_prompts else []
        if self.cfg.eval_limit:
            self.eval_prompts = self.eval_prompts[: self.cfg.eval_limit]
        self.order = EpochPermutation(len(self.prompts), [self.recipe.train.seed])
        self.moments = RunningMoments()
        self.pretrain = self._pretrain_batches()

    # ----- checkpoints -------------------------------------------------------------------
    def _write_checkpoint(self, directory: Path) -> None:
        """The policy as a chat model directory (``final/`` is these files), the value model in ``value/``."""
        write_model_files(directory, self.policy, self.tokenizer, self.recipe.to_toml())
        write_generation_config(directory, self.tokenizer.special_ids)
        value_dir = directory / VALUE_DIR
        value_dir.mkdir()
        write_reward_files(value_dir, self.value.state_dict(), self.value.config, self.tokenizer)
        write_checksums(value_dir)

    def _save(self, step: int) -> Path:
        data = {"moments": self.moments.state_dict(),
                "pretrain": self.pretrain.state_dict() if self.pretrain is not None else None}
        state = ts.TrainState(step, self.total_steps, 0, data)
        optim_state = dist.full_optimizer_state(self.models, self.optimizer)
        return ckpt.write_checkpoint(self.run_dir, state, optim_state, self._write_checkpoint,
                                     self.recipe.checkpoint.keep_last)

    def _restore(self) -> int:
        path = ckpt.newest_checkpoint(self.run_dir, lambda line: self.console.print(f"skipping damaged checkpoint: {line}"))
        if path is None:
            self.console.print(f"no checkpoint in {self.run_dir / ts.CHECKPOINTS}: starting from step 0")
            return 0
        ckpt.check_resumable(path, self.recipe.to_dict(), RESUMABLE)
        state, optim_state, payload = ts.read_train_state(path)
        self.policy.load_state_dict(read_model_state(path, self.policy.config))
        self.value.load_state_dict(read_reward_state(path / VALUE_DIR, self.value.config))
        dist.load_full_optimizer_state(self.models, self.optimizer, optim_state)
        self.moments.load_state_dict(state.data["moments"])
        if self.pretrain is not None:
            self.pretrain.load_state_dict(state.data["pretrain"])
        ts.restore_rng(path, payload)
        self.console.print(f"resumed from {path} (step {state.step})")
        return state.step

    # ----- one step ----------------------------------------------------------------------
    def _rollout(self, step: int) -> tuple[Rollout, list[Prompt]]:
        cfg = self.cfg
        chosen = [self.prompts[self.order[step * cfg.prompts_per_step + i]] for i in range(cfg.prompts_per_step)]
        queries = [p for p in chosen for _ in range(cfg.samples_per_prompt)]
        rollout = sample(self.policy, [q.ids for q in queries], cfg.max_new_tokens, cfg.top_p, cfg.temperature,
                         self.end_id, self.pad_id, seed=self.recipe.train.seed * 1_000_003 + step)
        rollout.input_ids, rollout.attention_mask, rollout.mask = (
            t.to(self.device) for t in (rollout.input_ids, rollout.attention_mask, rollout.mask))
        score(rollout, self.policy, self.reference, self.value, self.reward, self.end_id, self.pad_id,
              self.recipe.train.micro_batch_size)
        return rollout, queries

    def _pretrain_loss(self) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in next(self.pretrain).items()}
        hidden = self.policy.hidden_states(batch["input_ids"])
        loss, n = linear_cross_entropy(hidden, self.policy.lm_head.weight, batch["labels"],
                                       backend=self.policy.config.kernels)
        return loss / max(int(n), 1)

    def _update(self, rollout: Rollout, advantages, returns, step: int) -> dict[str, float]:
        cfg, width = self.cfg, rollout.prompt_width
        update_policy = step >= cfg.value_only_steps
        factor = lr_at(step, 1.0, self.total_steps, self.recipe.schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        generator = torch.Generator().manual_seed(self.recipe.train.seed * 7919 + step)
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.epochs):
            order = torch.randperm(len(rollout.input_ids), generator=generator)
            for start in range(0, len(order), cfg.mini_batch_size):
                index = order[start : start + cfg.mini_batch_size].to(self.device)
                batch, mask = rollout.rows(index), rollout.mask[index]
                v_loss, v_clip = value_loss(response_values(self.value, batch, width), rollout.values[index],
                                            returns[index], mask, cfg.value_clip)
                loss, metrics = cfg.value_coef * v_loss, {"value_loss": v_loss, "value_clipfrac": v_clip}
                if update_policy:
                    p_loss, p_clip = policy_loss(response_logprobs(self.policy, batch, width),
                                                 rollout.logprobs[index], advantages[index], mask, cfg.policy_clip)
                    loss = loss + p_loss
                    metrics.update(policy_loss=p_loss, policy_clipfrac=p_clip)
                    if self.pretrain is not None:
                        ptx = self._pretrain_loss()
                        loss = loss + cfg.pretrain_coef * ptx
                        metrics["pretrain_loss"] = ptx
                loss.backward()
                clip = self.recipe.optim.grad_clip or float("inf")
                metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(self.params, clip, foreach=True)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value.detach())
                updates += 1
        return {key: value / updates for key, value in sums.items()} | {"lr_factor": factor}

    def _step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        rollout, queries = self._rollout(step)
        raw = rollout.scores
        if cfg.reward_norm == "none":
            normalised = raw
        else:
            self.moments.update(raw)
            normalised = raw - self.moments.mean
            if cfg.reward_norm == "mean_std":
                normalised = normalised / max(self.moments.std, 1e-8)
        rewards, kl = shaped_rewards(normalised, rollout.logprobs, rollout.ref_logprobs, rollout.mask, cfg.kl_coef)
        advantages, returns = gae(rewards, rollout.values, rollout.mask, cfg.gamma, cfg.lam)
        advantages = whiten(advantages, rollout.mask)
        metrics = {"reward": float(raw.mean()), "reward_norm": float(normalised.mean()),
                   "kl": float(kl.sum(1).mean()), "response_len": float(rollout.mask.sum(1).float().mean())}
        answered = [(i, q.answer) for i, q in enumerate(queries) if q.answer is not None]
        if answered:
            rows = [i for i, _ in answered]
            hits = gold_hits(self.tokenizer, [rollout.responses[i] for i in rows], [a for _, a in answered])
            metrics["gold"] = sum(hits) / len(hits)
            ranking = ranking_accuracy(raw[rows], hits)
            if ranking is not None:
                metrics["reward_gold_ranking"] = ranking
        return metrics | self._update(rollout, advantages, returns, step)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Greedy replies to the held-out prompts: gold exact-match and mean reward-model score."""
        if not self.eval_prompts:
            return {}
        prompts = [p.ids for p in self.eval_prompts]
        rollout = sample(self.policy, prompts, self.cfg.max_new_tokens, 1.0, 0.0, self.end_id, self.pad_id, seed=0)
        rollout.input_ids, rollout.attention_mask, rollout.mask = (
            t.to(self.device) for t in (rollout.input_ids, rollout.attention_mask, rollout.mask))
        rewards = end_scores(self.reward, rollout, self.end_id, self.pad_id)
        result = {"eval_reward": float(rewards.mean())}
        answered = [(p.answer, r) for p, r in zip(self.eval_prompts, rollout.responses, strict=True)
                    if p.answer is not None]
        if answered:
            result["eval_gold"] = exact_match(self.tokenizer, [r for _, r in answered], [a for a, _ in answered])
        return result

    # ----- the loop ----------------------------------------------------------------------
    def run(self) -> tuple[int, dict]:
        """Train to ``train.steps`` (or a stop signal); returns (exit code, the last metrics record)."""
        self._build()
        start = self._restore() if self.resume else 0
        if self.overwrite:
            ckpt.remove_run(self.run_dir)
        ckpt.remove_leftovers(self.run_dir)
        if start >= self.total_steps and (self.run_dir / ckpt.FINAL).is_dir():
            self.console.print(f"the run already finished at step {self.total_steps}; nothing to do")
            return 0, {}
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_file(self.run_dir / ckpt.RECIPE_FILE) as handle:
            handle.write(self.recipe.to_toml())
        writer = MetricsWriter(self.run_dir / ckpt.METRICS_FILE, resume_step=start if self.resume else None)
        try:
            return self._loop(start, writer)
        finally:
            writer.close()

    def _loop(self, step: int, writer: MetricsWriter) -> tuple[int, dict]:
        cfg = self.cfg
        self.console.print(f"ppo: {len(self.prompts):,} prompts, {self.total_steps} steps of {cfg.prompts_per_step} "
                           f"prompts × {cfg.samples_per_prompt} samples, {cfg.value_only_steps} value-only steps, "
                           f"device {self.device}")
        if step == 0 and self.eval_prompts:
            start_eval = self.evaluate()
            writer.write({"step": 0, **start_eval})
            self.console.print(f"held-out before PPO: {_show(start_eval)}")
        record: dict = {}
        exit_code = 0
        progress = RunProgress(self.total_steps, "ppo", mode=self.recipe.logging.progress, console=self.console,
                               start=step, live_keys=LIVE_KEYS)
        with StopSignals() as stop, progress:
            while step < self.total_steps:
                began = time.perf_counter()
                metrics = self._step(step)
                step += 1
                if not all(math.isfinite(v) for v in metrics.values()):
                    raise RunFailed(f"PPO diverged at step {step} ({_show(metrics)}); stopped without saving it")
                record = {"step": step, **metrics, "step_time": time.perf_counter() - began}
                logged = step % self.recipe.logging.log_every == 0 or step == self.total_steps
                if logged:
                    writer.write(record)
                progress.update(step, record, log=logged)
                every = self.recipe.checkpoint.every
                if stop.received is not None and step < self.total_steps:
                    self._save(step)
                    self.console.print(f"stopped by {signal.Signals(stop.received).name} after step {step}; "
                                       "checkpoint saved (continue with --resume)")
                    exit_code = 128 + int(stop.received)
                    break
                if every and step % every == 0 and step < self.total_steps:
                    self._save(step)
        if exit_code == 0:
            record.update(self._finish(writer))
        return exit_code, record

    def _finish(self, writer: MetricsWriter) -> dict:
        ckpt.write_final(self.run_dir, self._save(self.total_steps))  # the policy files of the last checkpoint
        end_eval = self.evaluate()
        if end_eval:
            writer.write({"step": self.total_steps, **end_eval})
            self.console.print(f"held-out after PPO: {_show(end_eval)}")
        plot_curves(self.run_dir / ckpt.METRICS_FILE, self.run_dir / CURVES_FILE)
        self.console.print(f"saved {self.run_dir / ckpt.FINAL} and {self.run_dir / CURVES_FILE}")
        return end_eval


def _show(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
