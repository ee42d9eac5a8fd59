"""DualAR generation: prompt matrix -> frames (token + codes) with KV caches, upstream's sampler.

gpt-fast style: small functions over plain tensors, the model file stays a model.

- `prefill` runs the whole prompt through the slow transformer (filling its cache) and samples frame 0.
- `decode_frame` is one frame: a slow step at one position per row, then the fast transformer over
  the codebooks with its cache zeroed first. Codebook 0 is the slow token minus `<|semantic:0|>`
  (clamped at 0); codebooks 1.. are sampled from the first 1024 fast logits (the codec's residual
  books have 1024 entries).
- `sample` is upstream's `sample`/`logits_to_probs`: repetition penalty over the previous ids, top-p at
  temperature 1 (the token whose cumulative probability crosses p is dropped, the most likely one
  always kept), then temperature, softmax and the exponential race `argmax(probs / Exp(1))`.
- `generate` batches prompts of different lengths (right-padded, every row at its own positions, so a
  row's cache slots are those of a batch-1 run) and stops each row on its own `<|im_end|>`.

Upstream-compatible by default (`upstream_quirks=True`, fish-speech d3df505,
`fish_speech/models/text2semantic/inference.py` `generate`/`decode_one_token_ar`); these known
defects change tokens and are reproduced so that the released model behaves as under upstream:
  1. the slow head's repetition penalty looks at one column of the window (the oldest frame's token
     *and its codes*, used as vocabulary ids) instead of the last 16 tokens;
  2. the penalty history starts as zeros (code/id 0 is penalised during the first 16 steps) and
     never contains frame 0;
  3. frame 0 is not checked for `<|im_end|>`;
  4. the last frame is always dropped, also when the cap ended generation on a real frame.
`upstream_quirks=False` fixes all four. Not copied: the crashes of upstream for `max_new_tokens` 1
or negative and for sampled ids above `<|semantic:4095|>` (those are excluded from the final
argmax, which keeps every run upstream completes identical).

Random numbers: with `generators` (one `torch.Generator` per row, seeded as upstream's
`torch.manual_seed(seed)`), each row draws exactly the variates a batch-1 upstream run draws, so on
CPU a batched row equals its single run. Without them one draw per distribution comes from the
global generator (upstream's stream at batch 1; what `torch.compile` and CUDA graphs want).

Public API (also used by evaluation):
    settings = SamplingSettings(temperature=0.8, top_p=0.8, repetition_penalty=1.1, max_new_tokens=1024)
    results = generate(model, [prompt_a, prompt_b], settings, tokenizer.im_end_id, generators=seeded_generators([42, 42]))
    results[0].codes   # (num_codebooks, frames) int64, ready for the codec decoder
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from fish_speech.errors import UserError
from fish_speech.text2semantic.model import DualARTransformer
from fish_speech.text2semantic.options import SamplingSettings

log = logging.getLogger(__name__)

# Upstream's repetition-aware window (`decode_n_tokens`: the previous 16 frames).
PENALTY_WINDOW = 16
# Residual codebooks of the S1 codec hold 1024 codes; only that many fast logits are sampled.
RESIDUAL_CODEBOOK_SIZE = 1024
# generate_long keeps 2048 positions free for the output: prompts may be at most max_seq_len - 2048.
OUTPUT_RESERVE = 2048


@dataclass
class Generation:
    """One row's result: all frames (row 0 tokens, rows 1.. codes), the codes to decode, why it stopped."""

    frames: Tensor  # (C+1, n) int64
    codes: Tensor  # (C, m) int64, m = n-1 with upstream quirks
    stop: str  # "im_end" or "max_new_tokens"
    prompt_length: int


# ---- sampling --------------------------------------------------------------------------------------


def apply_repetition_penalty(logits: Tensor, previous: Tensor, penalty: Tensor) -> Tensor:
    """Scale the logits at the ids `previous` `(B, W)`: negative ones times ρ, others divided by ρ."""
    score = logits.gather(-1, previous)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(-1, previous, score)


def top_p_filter(logits: Tensor, top_p: Tensor) -> Tensor:
    """Set to -inf every logit outside the nucleus: sorted positions whose cumulative probability exceeds p."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cumulative = torch.cumsum(torch.softmax(sorted_logits, dim=-1), dim=-1)
    drop_sorted = cumulative > top_p
    drop_sorted[..., 0] = False  # the most likely token always stays
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def logits_to_probs(
    logits: Tensor, previous: Tensor | None, temperature: Tensor, top_p: Tensor, penalty: Tensor
) -> Tensor:
    """Penalty (when `previous` is given), top-p, temperature (clipped at 1e-5), softmax; in the logits dtype."""
    if previous is not None:
        logits = apply_repetition_penalty(logits, previous, penalty)
    logits = top_p_filter(logits, top_p)
    logits = logits / torch.clamp(temperature, min=1e-5)
    return torch.softmax(logits, dim=-1)


def exponential_race(
    probs: Tensor, generators: Sequence[torch.Generator] | None, limit: int | None = None
) -> Tensor:
    """Sample one id per row as `argmax(probs / E)`, E ~ Exp(1): no host sync, one draw per row.

    `limit`: ids >= limit are never returned (upstream would crash on them later).
    """
    if generators is None:
        noise = torch.empty_like(probs).exponential_(1)
    else:
        noise = torch.stack(
            [torch.empty_like(probs[b]).exponential_(1, generator=g) for b, g in enumerate(generators)]
        )
    ratio = probs / noise
    if limit is not None and limit < ratio.size(-1):
        ratio[..., limit:] = -1.0
    return torch.argmax(ratio, dim=-1)


def sample(
    logits: Tensor,
    previous: Tensor | None,
    params: tuple[Tensor, Tensor, Tensor],
    generators: Sequence[torch.Generator] | None,
    limit: int | None = None,
) -> Tensor:
    """Ids `(B,)` sampled from `logits` `(B, V)`; `params` = (temperature, top_p, penalty) 0-dim tensors."""
    return exponential_race(logits_to_probs(logits, previous, *params), generators, limit)


# ---- one frame -------------------------------------------------------------------------------------


def _fast_frame(
    model: DualARTransformer,
    hidden: Tensor,
    token: Tensor,
    window: Tensor | None,
    params: tuple[Tensor, Tensor, Tensor],
    generators: Sequence[torch.Generator] | None,
) -> Tensor:
    """Codes `(B, C)` of one frame from the slow hidden state and the sampled token."""
    c = model.config
    width = min(RESIDUAL_CODEBOOK_SIZE, c.codebook_size)
    model.reset_fast_cache()
    model.forward_fast_cached(hidden, 0, head=False)  # position 0 fills the cache; its logits are unused
    code = (token - model.semantic_begin_id).clamp_min(0)
    codes = [code]
    for k in range(1, c.num_codebooks):
        logits = model.forward_fast_cached(model.fast_embeddings(code), k)[:, :width]
        code = sample(logits, None if window is None else window[:, k + 1], params, generators)
        codes.append(code)
    return torch.stack(codes, dim=1)


def _slow_previous(window: Tensor | None, upstream_quirks: bool) -> Tensor | None:
    if window is None:
        return None
    # Quirk 1: upstream indexes the window as [:, 0] = the oldest frame's column (token and codes).
    return window[:, :, 0] if upstream_quirks else window[:, 0]


def decode_frame(
    model: DualARTransformer,
    x: Tensor,
    input_pos: Tensor,
    window: Tensor | None,
    params: tuple[Tensor, Tensor, Tensor],
    generators: Sequence[torch.Generator] | None = None,
    upstream_quirks: bool = True,
) -> Tensor:
    """One decode step: `x` `(B, C+1, 1)` (the previous frame) at slots `input_pos` `(B, 1)` -> frame `(B, C+1)`.

    `window` `(B, C+1, 16)` is the penalty history. Runs attention with the math kernel, as upstream.
    """
    with sdpa_kernel(SDPBackend.MATH):
        logits, hidden = model.forward_generate_cached(x, input_pos)
        token = sample(
            logits, _slow_previous(window, upstream_quirks), params, generators, model.semantic_end_id + 1
        )
        codes = _fast_frame(model, hidden, token, window, params, generators)
    return torch.cat([token[:, None], codes], dim=1)


def prefill(
    model: DualARTransformer,
    prompts: Tensor,
    lengths: Tensor,
    params: tuple[Tensor, Tensor, Tensor],
    generators: Sequence[torch.Generator] | None = None,
) -> Tensor:
    """Run right-padded prompts `(B, C+1, T)` of `lengths` `(B,)` through the slow cache; frame 0 `(B, C+1)`.

    No repetition penalty on frame 0 (upstream). Default SDPA kernel selection, as upstream's prefill.
    """
    b, _, t = prompts.shape
    input_pos = torch.arange(t, device=prompts.device)[None].expand(b, t)
    logits, hidden = model.forward_generate_cached(prompts, input_pos, last=lengths - 1)
    token = sample(logits, None, params, generators, model.semantic_end_id + 1)
    codes = _fast_frame(model, hidden, token, None, params, generators)
    return torch.cat([token[:, None], codes], dim=1)


def penalty_window(history: Tensor, frame: int, upstream_quirks: bool) -> Tensor:
    """The `(B, C+1, 16)` history window used to penalise frame `frame` (>= 1).

    Upstream (quirk 2): `history` column i holds frame i+1 and starts as zeros; frame f looks at
    columns 0..15 while f <= 16, else f-17..f-2. Corrected: column j holds frame j; frame f looks at
    the up to 16 frames before it (repeating frame 0 where fewer exist: repeats change nothing).
    """
    i = frame - 1
    if upstream_quirks:
        return history[:, :, :PENALTY_WINDOW] if i < PENALTY_WINDOW else history[:, :, i - PENALTY_WINDOW : i]
    idx = torch.arange(frame - PENALTY_WINDOW, frame, device=history.device).clamp_min(0)
    return history[:, :, idx]


# ---- the loop --------------------------------------------------------------------------------------


def seeded_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per row, seeded like `torch.manual_seed(seed)`."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def frame_budget(prompt_length: int, max_new_tokens: int, max_seq_len: int) -> int:
    """Upstream's N: at most `max_new_tokens` frames (0 = no cap), never past `max_seq_len`."""
    room = max_seq_len - prompt_length
    return room if max_new_tokens == 0 else min(max_new_tokens, room)


def check_prompt_length(prompt_length: int, max_seq_len: int, what: str = "prompt") -> None:
    """UserError when a prompt leaves fewer than 2048 positions for the output (upstream's limit)."""
    limit = max_seq_len - OUTPUT_RESERVE if max_seq_len > OUTPUT_RESERVE else max_seq_len - 1
    if prompt_length > limit:
        raise UserError(
            f"{what} is too long: {prompt_length} tokens, the limit is {limit} "
            f"(max_seq_len {max_seq_len} minus {max_seq_len - limit} for the output)"
        )


DecodeFn = Callable[..., Tensor]
_COMPILED: dict[str, DecodeFn] = {}


def compiled_decode_frame() -> DecodeFn:
    """`decode_frame` under `torch.compile` (CUDA graphs on CUDA), built once per process."""
    if "cuda" not in _COMPILED:
        _COMPILED["cuda"] = torch.compile(decode_frame, mode="reduce-overhead", fullgraph=True)
    return _COMPILED["cuda"]


@torch.inference_mode()
def generate(
    model: DualARTransformer,
    prompts: Sequence[Tensor],
    settings: SamplingSettings,
    im_end_id: int,
    generators: Sequence[torch.Generator] | None = None,
    cache_length: int | None = None,
    decode_fn: DecodeFn | None = None,
    progress: Callable[[int], None] | None = None,
    stop_check_every: int | None = None,
) -> list[Generation]:
    """Generate one row per prompt `(C+1, T_b)`; rows stop independently on `<|im_end|>` or their cap.

    `cache_length`: slow cache slots (default: the longest row's prompt + budget, rounded up to 8;
    upstream always uses `max_seq_len`, which gives the same tokens). `progress(n)` is called after
    every decode step with the number of finished steps. `stop_check_every`: steps between reads of
    the all-rows-done flag (default 1 on CPU, 8 on a GPU); results do not depend on it.
    """
    settings.validate()
    c = model.config
    device = model.embeddings.weight.device
    if generators is not None and len(generators) != len(prompts):
        raise ValueError(f"{len(generators)} generators for {len(prompts)} prompts")
    lengths_list = [int(p.shape[1]) for p in prompts]
    for t in lengths_list:
        check_prompt_length(t, c.max_seq_len)
    budgets = [frame_budget(t, settings.max_new_tokens, c.max_seq_len) for t in lengths_list]
    b, t_max = len(prompts), max(lengths_list)
    batch = torch.zeros(b, c.num_codebooks + 1, t_max, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        batch[i, :, : p.shape[1]] = p.to(device=device, dtype=torch.long)
    lengths = torch.tensor(lengths_list, device=device)
    length = cache_length or min(
        max(t + n for t, n in zip(lengths_list, budgets, strict=True)), c.max_seq_len
    )
    model.setup_caches(b, length)
    params = tuple(
        torch.tensor(v, dtype=torch.float32, device=device)
        for v in (settings.temperature, settings.top_p, settings.repetition_penalty)
    )
    quirks = settings.upstream_quirks
    step = decode_fn or decode_frame

    steps = max(budgets)
    history = torch.zeros(b, c.num_codebooks + 1, steps + 1, dtype=torch.long, device=device)
    frames = torch.zeros(b, c.num_codebooks + 1, steps, dtype=torch.long, device=device)
    frame = prefill(model, batch, lengths, params, generators)
    frames[:, :, 0] = frame
    budget_t = torch.tensor(budgets, device=device)
    done = budget_t <= 1
    n_frames = torch.ones(b, dtype=torch.long, device=device)
    stopped_on_end = torch.zeros(b, dtype=torch.bool, device=device)
    if not quirks:  # corrected: frame 0 enters the history and may end the row (quirks 2, 3)
        history[:, :, 0] = frame
        ended = frame[:, 0] == im_end_id
        stopped_on_end |= ended & ~done
        done |= ended
    limit = length - 1
    # Reading `done` is a host sync; on a GPU it would stall the launch queue every frame, so it is read
    # every 8 steps there (finished rows are masked, so the extra steps change nothing but time).
    check_every = stop_check_every or (1 if device.type == "cpu" else 8)
    for f in range(1, steps):
        if (f - 1) % check_every == 0 and bool(done.all()):
            break
        pos = (lengths + f - 1).clamp_max(limit)[:, None]
        window = penalty_window(history, f, quirks)
        if decode_fn is not None:  # CUDA graphs reuse their output buffers: mark the step, keep a copy
            torch.compiler.cudagraph_mark_step_begin()
            frame = step(model, frame[:, :, None], pos, window, params, generators, quirks).clone()
        else:
            frame = step(model, frame[:, :, None], pos, window, params, generators, quirks)
        active = ~done
        frames[:, :, f] = torch.where(active[:, None], frame, frames[:, :, f])
        history[:, :, f - 1 if quirks else f] = frame
        n_frames += active.long()
        ended = active & (frame[:, 0] == im_end_id)
        stopped_on_end |= ended
        done = done | ended | (n_frames >= budget_t)
        if progress is not None:
            progress(f)

    out = []
    n_cpu, end_cpu, frames_cpu = n_frames.tolist(), stopped_on_end.tolist(), frames.cpu()
    for i in range(b):
        row = frames_cpu[i, :, : n_cpu[i]]
        # Quirk 4: upstream drops the last frame whatever it is; corrected, only an <|im_end|> frame.
        keep = row.shape[1] - 1 if (quirks or end_cpu[i]) else row.shape[1]
        out.append(
            Generation(
                frames=row,
                codes=row[1:, :keep].clone(),
                stop="im_end" if end_cpu[i] else "max_new_tokens",
                prompt_length=lengths_list[i],
            )
        )
    return out
