"""DualAR text-to-semantic transformer of Fish Speech / OpenAudio S1-mini (upstream: `fish_speech/models/text2semantic/llama.py`, `DualARTransformer`).

A "slow" decoder-only transformer reads the token sequence (text tokens, and at audio positions the
semantic token plus the sum of the frame's codebook embeddings) and predicts the next token; a small
"fast" transformer then predicts, for each audio frame, its codebooks one after the other from the slow
hidden state. Module and parameter names equal the keys of upstream's `model.pth`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from fish_speech.errors import UserError


def _find_multiple(n: int, k: int) -> int:
    return n if n % k == 0 else n + k - (n % k)


@dataclass
class ModelConfig:
    """Hyper-parameters of the DualAR model, as stored in upstream's `config.json` (31 fields).

    Defaults are upstream's class defaults; `-1`/`None` sizes are resolved in `__post_init__`.
    """

    model_type: str = "dual_ar"
    vocab_size: int = 32000
    n_layer: int = 32
    n_head: int = 32
    n_local_heads: int = -1
    head_dim: int = 64
    dim: int = 4096
    intermediate_size: int | None = None
    rope_base: int = 10000
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    attention_qkv_bias: bool = False
    attention_o_bias: bool = False
    attention_qk_norm: bool = False
    codebook_size: int = 160
    num_codebooks: int = 4
    use_gradient_checkpointing: bool = True
    initializer_range: float = 0.02
    is_reward_model: bool = False
    scale_codebook_embeddings: bool = False
    n_fast_layer: int = 4
    fast_dim: int | None = None
    fast_n_head: int | None = None
    fast_n_local_heads: int | None = None
    fast_head_dim: int | None = None
    fast_intermediate_size: int | None = None
    fast_attention_qkv_bias: bool | None = None
    fast_attention_qk_norm: bool | None = None
    fast_attention_o_bias: bool | None = None

    def __post_init__(self) -> None:
        if self.n_local_heads == -1:
            self.n_local_heads = self.n_head
        if self.intermediate_size is None:
            self.intermediate_size = _find_multiple(int(8 * self.dim / 3), 256)
        # Falsy fast sizes fall back to the slow ones; the three flags only when None (upstream).
        self.fast_dim = self.fast_dim or self.dim
        self.fast_n_head = self.fast_n_head or self.n_head
        self.fast_n_local_heads = self.fast_n_local_heads or self.n_local_heads
        self.fast_head_dim = self.fast_head_dim or self.head_dim
        self.fast_intermediate_size = self.fast_intermediate_size or self.intermediate_size
        if self.fast_attention_qkv_bias is None:
            self.fast_attention_qkv_bias = self.attention_qkv_bias
        if self.fast_attention_qk_norm is None:
            self.fast_attention_qk_norm = self.attention_qk_norm
        if self.fast_attention_o_bias is None:
            self.fast_attention_o_bias = self.attention_o_bias
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for a configuration the model cannot be built from."""
        if self.model_type != "dual_ar":
            raise ValueError(f"model_type must be 'dual_ar', got {self.model_type!r}")
        for name in ("vocab_size", "n_layer", "n_head", "n_local_heads", "head_dim", "dim", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("codebook_size", "num_codebooks", "n_fast_layer", "intermediate_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.dim % self.n_head:
            raise ValueError(f"dim ({self.dim}) must be a multiple of n_head ({self.n_head})")
        if self.fast_dim % self.fast_n_head:
            raise ValueError(
                f"fast_dim ({self.fast_dim}) must be a multiple of fast_n_head ({self.fast_n_head})"
            )
        if self.n_head % self.n_local_heads:
            raise ValueError(
                f"n_head ({self.n_head}) must be a multiple of n_local_heads ({self.n_local_heads})"
            )
        if self.fast_n_head % self.fast_n_local_heads:
            raise ValueError(
                f"fast_n_head ({self.fast_n_head}) must be a multiple of fast_n_local_heads ({self.fast_n_local_heads})"
            )
        if self.head_dim % 2 or self.fast_head_dim % 2:
            raise ValueError("head_dim and fast_head_dim must be even (RoPE rotates pairs)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    # ---- config.json ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a parsed `config.json`; unknown keys and wrong types raise ValueError (as upstream)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}")
        for key, value in data.items():
            _check_type(key, value, fields[key].type)
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> ModelConfig:
        """Read upstream's `config.json`; a missing, unreadable or invalid file raises UserError naming it."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{path}: cannot read model config: {e}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as e:
            raise UserError(f"{path}: invalid model config: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        """All 31 fields, resolved, as upstream's writer stores them."""
        return dataclasses.asdict(self)

    def to_json_text(self) -> str:
        """`config.json` text exactly as upstream writes it (indent 4, sorted keys, non-ASCII kept)."""
        return json.dumps(self.to_dict(), indent=4, sort_keys=True, ensure_ascii=False)

    @classmethod
    def s1_mini(cls) -> ModelConfig:
        """The configuration of OpenAudio S1-mini (860,169,216 parameters)."""
        return cls(
            vocab_size=155776,
            n_layer=28,
            n_head=16,
            n_local_heads=8,
            head_dim=128,
            dim=1024,
            intermediate_size=3072,
            rope_base=1000000,
            norm_eps=1e-6,
            max_seq_len=8192,
            tie_word_embeddings=False,
            attention_qk_norm=True,
            codebook_size=4096,
            num_codebooks=10,
            initializer_range=0.03125,
            scale_codebook_embeddings=True,
            n_fast_layer=4,
            fast_dim=1024,
            fast_n_head=16,
            fast_n_local_heads=8,
            fast_head_dim=64,
            fast_intermediate_size=3072,
            fast_attention_qkv_bias=False,
            fast_attention_qk_norm=False,
            fast_attention_o_bias=False,
        )

    @classmethod
    def tiny(cls) -> ModelConfig:
        """A tiny configuration with every S1-mini feature (the golden vectors' config)."""
        return cls(
            vocab_size=4672,
            n_layer=2,
            n_head=4,
            n_local_heads=2,
            head_dim=32,
            dim=64,
            intermediate_size=96,
            rope_base=1000000,
            norm_eps=1e-6,
            max_seq_len=1024,
            tie_word_embeddings=False,
            attention_qk_norm=True,
            codebook_size=64,
            num_codebooks=4,
            initializer_range=0.125,
            scale_codebook_embeddings=True,
            n_fast_layer=2,
            fast_dim=64,
            fast_n_head=4,
            fast_n_local_heads=2,
            fast_head_dim=16,
            fast_intermediate_size=96,
            fast_attention_qkv_bias=False,
            fast_attention_qk_norm=False,
            fast_attention_o_bias=False,
        )


def _check_type(key: str, value: Any, annotation: str) -> None:
    """Check a config value against its (string) annotation; bools are not ints here."""
    allowed: list[type] = []
    for part in str(annotation).split("|"):
        part = part.strip()
        allowed.append({"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}[part])
    if float in allowed:
        allowed.append(int)
    ok = any(type(value) is t for t in allowed)
    if not ok:
        raise ValueError(f"{key} must be {annotation}, got {value!r}")


# ---- building blocks --------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """RMSNorm computed in float32, cast back to the input dtype, then scaled by the weight."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        xf = x.float()
        normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


def rope_table(seq_len: int, head_dim: int, base: float, device: torch.device | None = None) -> Tensor:
    """RoPE table `(seq_len, head_dim/2, 2)` of (cos, sin), rounded to bfloat16 as upstream does."""
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device)[: head_dim // 2].float() / head_dim))
    angles = torch.outer(torch.arange(seq_len, device=device).float(), freqs)
    return torch.stack([torch.cos(angles), torch.sin(angles)], dim=-1).to(torch.bfloat16)


def apply_rope(x: Tensor, table: Tensor) -> Tensor:
    """Rotate interleaved pairs `(x[2i], x[2i+1])` of `x` `(B, T, H, D)` by the table `(T, D/2, 2)`.

    A table `(B, T, D/2, 2)` gives every row its own positions (batched generation).
    """
    xp = x.float().reshape(*x.shape[:-1], x.size(-1) // 2, 2)
    table = table.view(-1 if table.ndim == 4 else 1, xp.size(1), 1, xp.size(3), 2)
    cos, sin = table[..., 0], table[..., 1]
    x0, x1 = xp[..., 0], xp[..., 1]
    out = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return out.flatten(3).type_as(x)


class KVCache(nn.Module):
    """Keys and values of one attention layer for generation: `(B, n_local_heads, L, head_dim)` each.

    Stored after q/k-norm and RoPE, before the grouped-query repeat (as upstream's `KVCache`).
    """

    def __init__(self, batch_size: int, length: int, n_heads: int, head_dim: int, dtype, device) -> None:
        super().__init__()
        shape = (batch_size, n_heads, length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, pos: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write `k`, `v` `(B, H, S, D)` at slots `pos` `(B, S)` (each row its own); return the whole cache."""
        rows = torch.arange(k.size(0), device=k.device)[:, None]
        self.k[rows, :, pos] = k.transpose(1, 2).to(self.k.dtype)
        self.v[rows, :, pos] = v.transpose(1, 2).to(self.v.dtype)
        return self.k, self.v

    def reset(self) -> None:
        self.k.zero_()
        self.v.zero_()


def _repeat_kv(x: Tensor, groups: int) -> Tensor:
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, groups, t, d).reshape(b, h * groups, t, d)


class Attention(nn.Module):
    """Grouped-query self-attention with fused qkv projection, optional per-head q/k RMSNorm and RoPE.

    With a `kv_cache` set (generation), `forward` takes the cache slots of its positions and attends
    over the whole cache under `mask` `(B, 1, S, L)`.
    """

    def __init__(
        self,
        dim: int,
        n_head: int,
        n_local_heads: int,
        head_dim: int,
        qkv_bias: bool,
        o_bias: bool,
        qk_norm: bool,
        norm_eps: float,
        dropout: float,
    ) -> None:
        super().__init__()
        self.n_head, self.n_local_heads, self.head_dim = n_head, n_local_heads, head_dim
        self.dropout = dropout
        self.wqkv = nn.Linear(dim, (n_head + 2 * n_local_heads) * head_dim, bias=qkv_bias)
        self.wo = nn.Linear(n_head * head_dim, dim, bias=o_bias)
        self.qk_norm = qk_norm
        if qk_norm:
            self.q_norm = nn.RMSNorm(head_dim, eps=norm_eps)
            self.k_norm = nn.RMSNorm(head_dim, eps=norm_eps)
        self.kv_cache: KVCache | None = None

    def forward(
        self, x: Tensor, rope: Tensor, mask: Tensor | None, input_pos: Tensor | None = None
    ) -> Tensor:
        """`x` `(B, T, dim)`; `mask` bool `(B, 1, T, T)` (True = may attend) or None for plain causal.

        `input_pos` `(B, T)`: cache slots of the positions of `x` (only with a `kv_cache`).
        """
        bsz, seqlen, _ = x.shape
        q_size, kv_size = self.n_head * self.head_dim, self.n_local_heads * self.head_dim
        q, k, v = self.wqkv(x).split([q_size, kv_size, kv_size], dim=-1)
        q = q.view(bsz, seqlen, self.n_head, self.head_dim)
        k = k.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        v = v.view(bsz, seqlen, self.n_local_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q, rope), apply_rope(k, rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        if self.kv_cache is not None and input_pos is not None:
            k, v = self.kv_cache.update(input_pos, k, v)
        groups = self.n_head // self.n_local_heads
        if groups > 1:  # head h uses kv head h // groups (= repeat_interleave, which is ~1000x slower on CPU)
            k = _repeat_kv(k, groups)
            v = _repeat_kv(v, groups)
        dropout_p = self.dropout if self.training else 0.0
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).reshape(bsz, seqlen, q_size)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU MLP: `w2(silu(w1 x) * w3 x)`."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    """Pre-norm residual block: attention then SwiGLU MLP."""

    def __init__(self, dim: int, hidden: int, attention: Attention, norm_eps: float) -> None:
        super().__init__()
        # Registration order = upstream's state-dict order.
        self.attention = attention
        self.feed_forward = FeedForward(dim, hidden)
        self.ffn_norm = RMSNorm(dim, norm_eps)
        self.attention_norm = RMSNorm(dim, norm_eps)

    def forward(
        self, x: Tensor, rope: Tensor, mask: Tensor | None, input_pos: Tensor | None = None
    ) -> Tensor:
        h = x + self.attention(self.attention_norm(x), rope, mask, input_pos)
        return h + self.feed_forward(self.ffn_norm(h))


def _slow_block(c: ModelConfig) -> TransformerBlock:
    attn = Attention(
        c.dim,
        c.n_head,
        c.n_local_heads,
        c.head_dim,
        c.attention_qkv_bias,
        c.attention_o_bias,
        c.attention_qk_norm,
        c.norm_eps,
        c.dropout,
    )
    return TransformerBlock(c.dim, c.intermediate_size, attn, c.norm_eps)


def _fast_block(c: ModelConfig) -> TransformerBlock:
    attn = Attention(
        c.fast_dim,
        c.fast_n_head,
        c.fast_n_local_heads,
        c.fast_head_dim,
        c.fast_attention_qkv_bias,
        c.fast_attention_o_bias,
        c.fast_attention_qk_norm,
        c.norm_eps,
        c.dropout,
    )
    return TransformerBlock(c.fast_dim, c.fast_intermediate_size, attn, c.norm_eps)


# ---- the model -------------------------------------------------------------------------------------


class DualARTransformer(nn.Module):
    """Slow transformer over tokens + fast transformer over the codebooks of each audio frame.

    `semantic_begin_id`/`semantic_end_id` are the token ids of `<|semantic:0|>` and of the highest
    semantic token (from the tokenizer): positions whose token lies in that range are audio frames.
    """

    def __init__(self, config: ModelConfig, semantic_begin_id: int, semantic_end_id: int) -> None:
        super().__init__()
        c = self.config = config
        if not 0 <= semantic_begin_id <= semantic_end_id < c.vocab_size:
            raise ValueError(
                f"semantic ids {semantic_begin_id}..{semantic_end_id} do not fit vocab_size {c.vocab_size}"
            )
        self.semantic_begin_id = int(semantic_begin_id)
        self.semantic_end_id = int(semantic_end_id)

        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.codebook_embeddings = nn.Embedding(c.codebook_size * c.num_codebooks, c.dim)
        self.layers = nn.ModuleList(_slow_block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        if not c.tie_word_embeddings:
            self.output = nn.Linear(c.dim, c.vocab_size, bias=False)

        self.fast_project_in = nn.Linear(c.dim, c.fast_dim) if c.fast_dim != c.dim else nn.Identity()
        self.fast_embeddings = nn.Embedding(c.codebook_size, c.fast_dim)
        self.fast_layers = nn.ModuleList(_fast_block(c) for _ in range(c.n_fast_layer))
        self.fast_norm = RMSNorm(c.fast_dim, c.norm_eps)
        self.fast_output = nn.Linear(c.fast_dim, c.codebook_size, bias=False)

        self.register_buffer("codebook_offsets", torch.empty(0, dtype=torch.long), persistent=False)
        self.register_buffer("freqs_cis", torch.empty(0, dtype=torch.bfloat16), persistent=False)
        self.register_buffer("fast_freqs_cis", torch.empty(0, dtype=torch.bfloat16), persistent=False)
        self.reset_buffers()
        self.apply(self._init_weights)

    def reset_buffers(self, device: torch.device | str | None = None) -> None:
        """(Re)compute the non-persistent buffers (RoPE tables, codebook offsets) on `device`."""
        c = self.config
        device = torch.device(device) if device is not None else self.embeddings.weight.device
        self.codebook_offsets = torch.arange(c.num_codebooks, device=device) * c.codebook_size
        self.freqs_cis = rope_table(c.max_seq_len, c.head_dim, c.rope_base, device)
        self.fast_freqs_cis = rope_table(c.num_codebooks, c.fast_head_dim, c.rope_base, device)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, (RMSNorm, nn.RMSNorm)):
            nn.init.ones_(module.weight)

    # ---- pieces ----

    def is_semantic(self, token_ids: Tensor) -> Tensor:
        """Bool mask of positions holding a semantic (audio) token."""
        return (token_ids >= self.semantic_begin_id) & (token_ids <= self.semantic_end_id)

    def embed(self, inp: Tensor, scale_semantic: bool = False) -> Tensor:
        """Input embedding of `inp` `(B, C+1, T)` (upstream `DualARTransformer.embed`): token embedding + codebook sum at audio positions.

        `scale_semantic` divides the whole sum at audio positions by √(C+1): upstream's inference path
        does this when `scale_codebook_embeddings` is set; its training path never does.
        """
        tokens = inp[:, 0]
        semantic = self.is_semantic(tokens)
        codes = inp[:, 1:] + self.codebook_offsets[:, None]  # (B, C, T)
        vq = self.codebook_embeddings(codes).sum(dim=1)  # (B, T, dim)
        x = self.embeddings(tokens) + torch.where(semantic[..., None], vq, torch.zeros_like(vq))
        if scale_semantic:
            scaled = x / math.sqrt(self.config.num_codebooks + 1)
            x = torch.where(semantic[..., None], scaled, x)
        return x

    def _run_blocks(self, blocks: nn.ModuleList, x: Tensor, rope: Tensor, mask: Tensor | None) -> Tensor:
        use_ckpt = self.config.use_gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in blocks:
            x = checkpoint(block, x, rope, mask, use_reentrant=False) if use_ckpt else block(x, rope, mask)
        return x

    def slow_forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Slow transformer on embeddings `x` `(B, T, dim)` -> (token logits `(B, T, V)`, hidden before the final norm).

        With right padding a `key_padding_mask` does not change the outputs at real positions (causal
        attention never looks right); passing None lets SDPA use its fastest causal kernels.
        """
        seqlen = x.size(1)
        if seqlen > self.config.max_seq_len:
            raise ValueError(f"sequence length {seqlen} exceeds max_seq_len {self.config.max_seq_len}")
        mask = None
        if key_padding_mask is not None:
            causal = torch.ones(seqlen, seqlen, dtype=torch.bool, device=x.device).tril()
            mask = causal[None, None] & ~key_padding_mask[:, None, None, :]
        hidden = self._run_blocks(self.layers, x, self.freqs_cis[:seqlen], mask)
        slow_out = self.norm(hidden)
        if self.config.tie_word_embeddings:
            logits = F.linear(slow_out, self.embeddings.weight)
        else:
            logits = self.output(slow_out)
        return logits, hidden

    def fast_forward(self, hidden: Tensor, codes: Tensor) -> Tensor:
        """Codebook logits `(N, C, codebook_size)` from slow hidden states `(N, dim)` and target codes `(N, C)`.

        Fast position 0 sees the projected hidden state, position i the embedding of code i-1.
        """
        first = self.fast_project_in(hidden)[:, None]
        rest = self.fast_embeddings(codes[:, :-1])
        x = torch.cat([first, rest], dim=1)
        x = self._run_blocks(self.fast_layers, x, self.fast_freqs_cis[: x.size(1)], None)
        return self.fast_output(self.fast_norm(x))

    # ---- forwards ----

    def forward(
        self, inp: Tensor, labels: Tensor, key_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Training forward (upstream `DualARTransformer.forward`): (token logits `(B, T, V)`, codebook logits `(N, C, codebook_size)`).

        `inp`, `labels`: `(B, C+1, T)` int64 (labels -100 = ignore); `key_padding_mask` `(B, T)` True at
        padding. The N rows are the positions whose row-0 label is a semantic token, in row-major (b, t)
        order; their codebook targets are `labels[:, 1:]` there. No embedding scaling in training.
        """
        token_logits, hidden = self.slow_forward(self.embed(inp), key_padding_mask)
        sel = self.is_semantic(labels[:, 0])  # (B, T)
        codes = labels[:, 1:].transpose(1, 2)[sel].clamp_min(0)  # (N, C); -100 never reaches the lookup
        codebook_logits = self.fast_forward(hidden[sel], codes)
        return token_logits, codebook_logits

    def forward_generate(self, inp: Tensor) -> tuple[Tensor, Tensor]:
        """Inference forward over a whole prompt, no cache: (token logits `(B, T, V)`, fast input `(B, T, fast_dim)`).

        Matches upstream's `forward_generate(return_all=True)`: embeddings scaled at audio positions
        when `scale_codebook_embeddings` is set, plain causal attention.
        """
        x = self.embed(inp, scale_semantic=self.config.scale_codebook_embeddings)
        token_logits, hidden = self.slow_forward(x)
        return token_logits, self.fast_project_in(hidden)

    # ---- generation with KV caches (upstream: `setup_caches`, `forward_generate`, `forward_generate_fast`) ----

    def setup_caches(
        self, batch_size: int, length: int | None = None, dtype: torch.dtype | None = None
    ) -> None:
        """Zeroed KV caches: slow `length` slots (default `max_seq_len`, rounded up to 8), fast C slots.

        Caches of the same size are zeroed in place and kept (a compiled decode step then stays valid).
        """
        c = self.config
        length = _find_multiple(length or c.max_seq_len, 8)
        dtype = dtype or self.embeddings.weight.dtype
        device = self.embeddings.weight.device
        current = self.layers[0].attention.kv_cache
        same = current is not None and current.k.shape[:3] == (batch_size, c.n_local_heads, length)
        if same and current.k.dtype == dtype and current.k.device == device:
            for block in (*self.layers, *self.fast_layers):
                block.attention.kv_cache.reset()
            return
        for block in self.layers:
            block.attention.kv_cache = KVCache(batch_size, length, c.n_local_heads, c.head_dim, dtype, device)
        for block in self.fast_layers:
            block.attention.kv_cache = KVCache(
                batch_size, c.num_codebooks, c.fast_n_local_heads, c.fast_head_dim, dtype, device
            )

    def clear_caches(self) -> None:
        """Drop the KV caches (back to the training forward)."""
        for block in (*self.layers, *self.fast_layers):
            block.attention.kv_cache = None

    @property
    def cache_length(self) -> int:
        cache = self.layers[0].attention.kv_cache
        return 0 if cache is None else cache.k.size(2)

    def reset_fast_cache(self) -> None:
        """Zero the fast caches (upstream does so at the start of every frame)."""
        for block in self.fast_layers:
            block.attention.kv_cache.reset()

    def forward_generate_cached(
        self, inp: Tensor, input_pos: Tensor, last: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Slow step with the cache: `inp` `(B, C+1, S)` at slots `input_pos` `(B, S)` (positions = slots).

        Returns the token logits `(B, V)` and the fast input `(B, fast_dim)` (the last-layer output
        before the final norm, through `fast_project_in`) of position `last` `(B,)` (default S-1).
        Every query attends over all cache slots up to its own, as upstream's masked full-cache attention.
        """
        x = self.embed(inp, scale_semantic=self.config.scale_codebook_embeddings)
        length = self.cache_length
        mask = torch.arange(length, device=x.device)[None, None, None, :] <= input_pos[:, None, :, None]
        rope = self.freqs_cis[input_pos]
        for block in self.layers:
            x = block(x, rope, mask, input_pos)
        x = x[:, -1] if last is None else x[torch.arange(x.size(0), device=x.device), last]
        slow_out = self.norm(x)
        if self.config.tie_word_embeddings:
            logits = F.linear(slow_out, self.embeddings.weight)
        else:
            logits = self.output(slow_out)
        return logits, self.fast_project_in(x)

    def forward_fast_cached(self, x: Tensor, pos: int, head: bool = True) -> Tensor | None:
        """One fast-transformer position `pos` for `x` `(B, fast_dim)` with the fast cache: codebook logits `(B, codebook_size)`.

        `head=False` only fills the cache (upstream computes and discards position 0's logits).
        """
        b = x.size(0)
        input_pos = torch.full((b, 1), pos, dtype=torch.long, device=x.device)
        mask = torch.arange(self.config.num_codebooks, device=x.device)[None, None, None, :] <= pos
        mask = mask.expand(b, 1, 1, -1)
        rope = self.fast_freqs_cis[pos : pos + 1]
        h = x[:, None]
        for block in self.fast_layers:
            h = block(h, rope, mask, input_pos)
        if not head:
            return None
        return self.fast_output(self.fast_norm(h[:, 0]))
