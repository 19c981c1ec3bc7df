"""The lm-eval model class backed by our model and tokenizer, registered as ``qwen_cli``.

``lm_eval --model qwen_cli --model_args pretrained=CKPT`` works once this module is imported;
``qwen eval`` builds it around an already loaded model. lm-eval's CLI passes ``--device cuda:0``
unless told otherwise; on a machine without that accelerator the model runs on the CPU and says
so once (:func:`resolve_device`), as lm-eval's own HFLM does.

* ``loglikelihood``: requests are deduplicated and sorted longest first, then run in right-padded
  batches (no mask is needed: padding sits after every real token). Only the hidden states at
  continuation positions go through the output projection, which for a 151,936-word vocabulary is
  most of the cost. Requests that share a context and whose continuations are one token each (the
  multiple-choice case: " A"/" B"/" C"/" D") are scored from a single run of the context.
* ``loglikelihood_rolling``: the document is cut into disjoint windows of at most ``max_length``
  tokens, each conditioned on the preceding tokens (lm-eval's rolling-window scheme); the windows
  are scored as ordinary log-likelihood requests and summed per document.
* ``generate_until``: greedy (or sampled) decoding with ``qwen_cli.inference.generate`` in batches; stop
  strings end a row and the text is cut at the first one. Prompt and generated tokens share the
  window: the generation budget (``max_gen_toks``) shrinks to what the prompt leaves of it, down to
  ``MIN_GEN_TOKS``; only a prompt that leaves less than that loses its oldest tokens.

Nothing is cut silently: the items (task, doc id) whose prompt or context lost tokens to the window
are kept in ``prompts_cut``, and each call warns once per task that has any (``EvalProgress.warn``).
Progress: one bar per task while scoring or generating (``EvalProgress.bars``; off by default).
"""

from __future__ import annotations

from collections import Counter, defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from qwen_cli.data.jinja_chat import chat_template_for
from qwen_cli.evaluation.progress import EvalProgress

Request = tuple[tuple[str, str], list[int], list[int]]
Item = tuple[str, int | None]  # (task name, doc id) of a request
MIN_GEN_TOKS = 16  # the least generation budget before a prompt is cut: room for "The answer is 1,234."


def resolve_device(device: str | None) -> str:
    """``device``, or ``cpu`` (with a note on stderr) when it names an accelerator this machine lacks."""
    device = device or "cpu"
    kind = device.split(":")[0]
    available = {"cuda": torch.cuda.is_available,
                 "mps": lambda: getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if kind in available and not available[kind]():
        import sys

        print(f"note: device {device} is not available here; running on cpu", file=sys.stderr)
        return "cpu"
    return device


def _item(request: Instance) -> Item:
    return request.task_name or request.request_type, request.doc_id


def _cut_at_stops(text: str, until: list[str]) -> str:
    for stop in until:
        text = text.split(stop)[0] if stop else text
    return text


@register_model("qwen_cli")
class QwenLM(TemplateLM):
    """lm-eval adapter: ``QwenLM(model=..., tokenizer=...)`` or ``QwenLM(pretrained=CKPT_DIR)``."""

    def __init__(self, pretrained: str | None = None, model=None, tokenizer=None, batch_size: int | str = 8,
                 max_length: int | None = None, max_gen_toks: int = 256, device: str = "cpu",
                 seed: int = 0, progress: EvalProgress | None = None, chat: bool = False, **_ignored) -> None:
        super().__init__()
        if model is None:
            from qwen_cli.checkpoint import load

            model, tokenizer = load(pretrained, device=resolve_device(device))
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_length = max_length or model.config.max_position_embeddings
        self.max_gen_toks = max_gen_toks
        self.seed = seed
        self.progress = progress or EvalProgress(enabled=False)
        self.prompts_cut: dict[str, set[int | None]] = defaultdict(set)
        # --chat: the checkpoint's own chat template (or ChatML), as qwen specialize and qwen chat prompt
        self.chat = chat_template_for(tokenizer) if chat else None
        self.stop_ids = self.chat.stop_ids if self.chat else (tokenizer.eot_id,)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eot_id

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def tokenizer_name(self) -> str:
        return f"qwen_cli-{self.tokenizer.hash[:16]}"

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if self.chat:  # a rendered chat prompt: its special tokens (<|im_start|>, ...) are tokens again
            return self.tokenizer.encode_with_specials(string, self.tokenizer.special_ids)
        return self.tokenizer.encode(string)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """lm-eval's chat hook (``simple_evaluate(apply_chat_template=True)``, ``qwen eval --chat``): the
        conversation as text, the assistant's turn opened (our tasks prefill none of it)."""
        return self.tok_decode(self.chat.prompt(chat_history))

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        """The template lm-eval records with the run: the tokenizer's Jinja source, or ChatML."""
        return (self.tokenizer.chat_template or "chatml") if chat_template else None

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    def _record_cuts(self, items: list[Item], cut: list[bool], room: str) -> None:
        """Remember the items whose input lost tokens; warn once per task that has any."""
        docs: dict[str, set] = defaultdict(set)
        lost: dict[str, set] = defaultdict(set)
        for (task, doc), was_cut in zip(items, cut, strict=True):
            docs[task].add(doc)
            if was_cut:
                lost[task].add(doc)
        for task, cut_docs in lost.items():
            self.prompts_cut[task] |= cut_docs
            self.progress.warn(f"{task}: {len(cut_docs)} of {len(docs[task])} prompts do not fit {room}; "
                               "their oldest tokens were cut")

    # ------------------------------------------------------------ log-likelihood
    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        encoded = [self._encode_request(*req.args) for req in requests]
        return self._loglikelihood_tokens(encoded, items=[_item(req) for req in requests])

    def _encode_request(self, context: str, continuation: str) -> Request:
        """lm-eval's split of a pair (``TemplateLM.loglikelihood``): an empty context is the prefix token."""
        if context:
            return ((context, continuation), *self._encode_pair(context, continuation))
        tokens = self.tok_encode(continuation)
        if tokens[0] == self.prefix_token_id:
            return (context, continuation), tokens[:1], tokens[1:]
        return (context, continuation), [self.prefix_token_id], tokens

    def _loglikelihood_tokens(self, requests: list[Request], disable_tqdm: bool = False,
                              items: list[Item] | None = None, **kwargs):
        limit = self.max_length
        items = items or [("loglikelihood", None)] * len(requests)
        self._record_cuts(items, [len(ctx) + len(cont) > limit + 1 for _, ctx, cont in requests],
                          f"the {limit}-token window with their continuation")
        rows = self._rows(requests)
        per_request: dict[int, list[tuple[float, bool]]] = defaultdict(list)
        ordered = sorted(rows, key=len, reverse=True)
        with self.progress.bars(Counter(task for task, _ in items), "scoring") as advance:
            for start in range(0, len(ordered), self.batch_size):
                batch = ordered[start : start + self.batch_size]
                groups = [self._split_targets(rows[tokens]) for tokens in batch]
                for index, result in self._score_grouped(batch, groups):
                    per_request[index].append(result)
                    advance(items[index][0])
        results = []
        for index in range(len(requests)):
            parts = per_request[index]
            results.append((sum(p[0] for p in parts), all(p[1] for p in parts)))
            if self.cache_hook is not None:
                self.cache_hook.add_partial("loglikelihood", requests[index][0], results[-1])
        return results

    def _rows(self, requests: list[Request]) -> dict[tuple[int, ...], list[tuple[int, int, int]]]:
        """One row per distinct model input (the last ``max_length`` tokens): [(position, target, request)]."""
        limit = self.max_length
        rows: dict[tuple[int, ...], list[tuple[int, int, int]]] = defaultdict(list)
        for index, (_, context, continuation) in enumerate(requests):
            if len(continuation) == 1:
                ctx = tuple(context[-limit:])
                rows[ctx].append((len(ctx) - 1, continuation[0], index))
                continue
            whole = (context + continuation)[-(limit + 1):]
            tokens = tuple(whole[:-1])
            n = min(len(continuation), limit)  # a continuation longer than the window: score its tail
            for k, target in enumerate(whole[-n:]):
                rows[tokens].append((len(tokens) - n + k, target, index))
        return rows

    @staticmethod
    def _split_targets(entries: list[tuple[int, int, int]]) -> dict[int, tuple[list[int], list[int]]]:
        """Targets of one row grouped by request: {request: (positions, targets)}."""
        grouped: dict[int, tuple[list[int], list[int]]] = {}
        for pos, tgt, index in entries:
            positions, targets = grouped.setdefault(index, ([], []))
            positions.append(pos)
            targets.append(tgt)
        return grouped

    def _score_grouped(self, batch: list[tuple[int, ...]], groups: list[dict]):
        """Run each distinct row once; score every request that reads from it."""
        rows, positions, targets, owners = [], [], [], []
        for row_number, (tokens, group) in enumerate(zip(batch, groups, strict=True)):
            for index, (pos, tgt) in group.items():
                positions.append(pos)
                targets.append(tgt)
                owners.append((row_number, index))
            rows.append(list(tokens))
        scored = self._score_positions(rows, owners, positions, targets)
        return [(index, result) for (_, index), result in zip(owners, scored, strict=True)]

    @torch.inference_mode()
    def _score_positions(self, rows, owners, positions, targets) -> list[tuple[float, bool]]:
        """One right-padded forward; log p and greedy flags of each owner's targets at its positions."""
        width = max(len(r) for r in rows)
        ids = torch.zeros(len(rows), width, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        hidden = self.model.hidden_states(ids.to(self.device))
        row_index = torch.tensor([r for (r, _), p in zip(owners, positions, strict=True) for _ in p])
        pos_index = torch.tensor([q for p in positions for q in p])
        logits = self.model.lm_head(hidden[row_index.to(self.device), pos_index.to(self.device)]).float()
        logprobs = F.log_softmax(logits, dim=-1)
        flat = torch.tensor([t for ts in targets for t in ts], device=self.device)
        picked = logprobs.gather(1, flat[:, None])[:, 0].tolist()
        greedy = (logits.argmax(-1) == flat).tolist()
        results, start = [], 0
        for ts in targets:
            end = start + len(ts)
            results.append((sum(picked[start:end]), all(greedy[start:end])))
            start = end
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        pieces: list[Request] = []
        owners: list[int] = []
        for number, (text,) in enumerate(req.args for req in requests):
            windows = get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                                max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, windows):
                pieces.append(((text, ""), context, continuation))
                owners.append(number)
        totals = [0.0] * len(requests)
        scored = self._loglikelihood_tokens(pieces, items=[_item(requests[owner]) for owner in owners])
        for owner, (logprob, _) in zip(owners, scored, strict=True):
            totals[owner] += logprob
        for req, total in zip(requests, totals, strict=True):
            if self.cache_hook is not None:
                self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ------------------------------------------------------------ generation
    def _fit(self, prompt: list[int], max_new: int) -> tuple[list[int], int, bool]:
        """(prompt tokens, generation budget, cut?): the whole prompt and ``max_new`` shrunk to the room
        the window leaves; when that is under ``MIN_GEN_TOKS``, the prompt's last tokens and that minimum."""
        floor = min(max_new, MIN_GEN_TOKS, self.max_length - 1)
        budget = min(max_new, self.max_length - len(prompt))
        if budget >= floor:
            return prompt, budget, False
        return prompt[len(prompt) - (self.max_length - floor) :], floor, True

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        items = [_item(req) for req in requests]
        fitted = [self._fit(self.tok_encode(req.args[0]), int(req.args[1].get("max_gen_toks", self.max_gen_toks)))
                  for req in requests]
        self._record_cuts(items, [cut for _, _, cut in fitted],
                          f"the {self.max_length}-token window with room to generate")
        groups: dict[tuple[str, int], list[int]] = defaultdict(list)  # same settings and budget: one batch
        for index, (req, (_, budget, _)) in enumerate(zip(requests, fitted, strict=True)):
            groups[(repr(sorted(req.args[1].items())), budget)].append(index)
        outputs: list[str] = [""] * len(requests)
        with self.progress.bars(Counter(task for task, _ in items), "generating") as advance:
            for (_, budget), indices in groups.items():
                indices.sort(key=lambda i: len(fitted[i][0]), reverse=True)
                for start in range(0, len(indices), self.batch_size):
                    chunk = indices[start : start + self.batch_size]
                    texts = self._generate(requests[chunk[0]].args[1], [fitted[i][0] for i in chunk], budget)
                    for i, text in zip(chunk, texts, strict=True):
                        outputs[i] = text
                        advance(items[i][0])
                        if self.cache_hook is not None:
                            self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return outputs

    def _generate(self, kwargs: dict, prompts: list[list[int]], budget: int) -> list[str]:
        """Decode ``budget`` tokens at most per prompt with lm-eval's settings; text cut at the first stop."""
        from qwen_cli.inference.generate import generate

        until = kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
        new = generate(self.model, prompts, budget, temperature=temperature, stop_ids=self.stop_ids,
                       stop_strings=until, tokenizer=self.tokenizer, seed=self.seed)
        return [_cut_at_stops(self.tok_decode(tokens), until) for tokens in new]
