"""The OpenAudio S1-mini codec ("modded DAC"): causal conv encoder, windowed transformers, residual VQ, decoder.

Written from the facts of upstream's modded DAC (`fish_speech/models/dac/`, config `modded_dac_vq`, fish-speech d3df505). Audio at 44.1 kHz goes through a causal convolutional encoder (hop 512)
whose last block ends in a windowed causal transformer, then the quantizer down-samples by 4 (2048
samples per code frame), runs another windowed transformer and quantizes with one semantic codebook
(4096 entries) followed by nine residual codebooks (1024 entries). Module and parameter names mirror
the keys of upstream's `codec.pth`, so `state_dict()` has exactly the file's layout.

Numerics follow upstream's operation order so that codes are bit-identical with upstream in float32: weight norm via
torch's own kernel, Snake in upstream's operation order, a bf16 RoPE table read from the checkpoint,
SDPA with one boolean window mask, and the VQ distance in upstream's algebraic form.

Inputs longer than the stored RoPE table (190.2 s for the real codec) are encoded in overlapping
windows whose left context covers the model's whole receptive field (see `Codec.encode`).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrizations, parametrize

from fish_speech.codec.options import SAMPLE_RATE

# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class TransformerConfig:
    """A windowed causal transformer (`WindowLimitedTransformer` upstream)."""

    n_layer: int
    dim: int
    n_head: int
    intermediate_size: int
    block_size: int  # rows of the RoPE table stored in codec.pth (= longest sequence upstream accepts)
    window_size: int  # a query attends to itself and the window_size - 1 frames before it
    head_dim: int = 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class CodecConfig:
    """Hyper-parameters of the codec. `s1_mini()` is the real model, `tiny()` the golden test model."""

    sample_rate: int = SAMPLE_RATE
    encoder_dim: int = 64
    encoder_rates: tuple[int, ...] = (2, 4, 8, 8)
    encoder_transformer_layers: tuple[int, ...] = (0, 0, 0, 4)
    encoder_block_size: int = 16384
    encoder_window: int = 512  # hard-coded upstream, not read from the YAML
    decoder_dim: int = 1536
    decoder_rates: tuple[int, ...] = (8, 8, 4, 2)
    head_dim: int = 64
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    downsample_factor: tuple[int, ...] = (2, 2)
    semantic_codebook_size: int = 4096
    n_codebooks: int = 9  # residual codebooks after the semantic one
    codebook_size: int = 1024
    codebook_dim: int = 8
    quantizer_layers: int = 8  # pre_module / post_module depth
    quantizer_heads: int = 16
    quantizer_intermediate: int = 3072
    quantizer_block_size: int = 4096
    quantizer_window: int = 128
    name: str = field(default="custom", compare=False)

    # -- presets
    @classmethod
    def s1_mini(cls) -> CodecConfig:
        """The real OpenAudio S1-mini codec (`modded_dac_vq.yaml`, 541 state-dict entries)."""
        return cls(name="s1-mini")

    @classmethod
    def tiny(cls) -> CodecConfig:
        """The tiny codec of the golden vectors (415 entries, same hop and codebooks as the real one)."""
        return cls(
            encoder_dim=8,
            encoder_transformer_layers=(0, 0, 0, 2),
            encoder_block_size=1024,
            decoder_dim=64,
            quantizer_layers=2,
            quantizer_heads=2,
            quantizer_intermediate=384,
            quantizer_block_size=256,
            name="tiny",
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> CodecConfig:
        """Read an upstream-style config (the golden `config.json`: Hydra fields under "config")."""
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        c = raw.get("config", raw)
        general = c.get("transformer_general_config", {})
        q = c["quantizer"]
        pre = q["pre_module"]["config"]
        if q["pre_module"]["config"] != q["post_module"]["config"]:
            raise ValueError(f"{path}: pre_module and post_module configs differ (unsupported)")
        if pre.get("n_local_heads", -1) not in (-1, pre["n_head"]):
            raise ValueError(f"{path}: grouped-query attention (n_local_heads) is unsupported")
        return cls(
            sample_rate=int(c.get("sample_rate", 44100)),
            encoder_dim=int(c["encoder_dim"]),
            encoder_rates=tuple(c["encoder_rates"]),
            encoder_transformer_layers=tuple(c["encoder_transformer_layers"]),
            encoder_block_size=int(general.get("block_size", 16384)),
            decoder_dim=int(c["decoder_dim"]),
            decoder_rates=tuple(c["decoder_rates"]),
            head_dim=int(general.get("head_dim", 64)),
            rope_base=float(general.get("rope_base", 10000)),
            norm_eps=float(general.get("norm_eps", 1e-5)),
            downsample_factor=tuple(q.get("downsample_factor", (2, 2))),
            semantic_codebook_size=int(q.get("semantic_codebook_size", 4096)),
            n_codebooks=int(q["n_codebooks"]),
            codebook_size=int(q["codebook_size"]),
            codebook_dim=int(q["codebook_dim"]),
            quantizer_layers=int(pre["n_layer"]),
            quantizer_heads=int(pre["n_head"]),
            quantizer_intermediate=int(pre["intermediate_size"]),
            quantizer_block_size=int(pre["block_size"]),
            quantizer_window=int(q["pre_module"].get("window_size", 128)),
            name=os.path.basename(os.fspath(path)),
        )

    def to_dict(self) -> dict:
        return asdict(self)

    # -- derived sizes
    @property
    def latent_dim(self) -> int:
        return self.encoder_dim * 2 ** len(self.encoder_rates)

    @property
    def hop_length(self) -> int:
        return math.prod(self.encoder_rates)

    @property
    def frame_length(self) -> int:
        """Input samples per code frame (2048)."""
        return self.hop_length * math.prod(self.downsample_factor)

    @property
    def num_codebooks(self) -> int:
        return 1 + self.n_codebooks

    def encoder_transformer(self, width: int, n_layer: int) -> TransformerConfig:
        # Upstream fixes these from the block width: 64-wide heads, FFN 3x, window 512.
        return TransformerConfig(
            n_layer=n_layer,
            dim=width,
            n_head=width // 64,
            intermediate_size=3 * width,
            block_size=self.encoder_block_size,
            window_size=self.encoder_window,
            head_dim=self.head_dim,
            rope_base=self.rope_base,
            norm_eps=self.norm_eps,
        )

    @property
    def quantizer_transformer(self) -> TransformerConfig:
        return TransformerConfig(
            n_layer=self.quantizer_layers,
            dim=self.latent_dim,
            n_head=self.quantizer_heads,
            intermediate_size=self.quantizer_intermediate,
            block_size=self.quantizer_block_size,
            window_size=self.quantizer_window,
            head_dim=self.head_dim,
            rope_base=self.rope_base,
            norm_eps=self.norm_eps,
        )

    @property
    def max_input_samples(self) -> int:
        """Longest input one pass of upstream d3df505 accepts (RoPE table rows x hop): 190.2 s."""
        limits = [self.quantizer_block_size * self.frame_length]
        if any(self.encoder_transformer_layers):
            # the encoder transformer sits after all encoder strides, at hop_length
            limits.append(self.encoder_block_size * self.hop_length)
        return min(limits)

    @property
    def receptive_field_samples(self) -> int:
        """How far back (in input samples) a code frame can see; left context for windowed encoding."""
        r = 6  # encoder.block.0, k = 7
        hop = 1
        for i, stride in enumerate(self.encoder_rates):
            r += 6 * (1 + 3 + 9) * hop  # residual units, k = 7, dilations 1, 3, 9
            r += (2 * stride - stride) * hop  # strided conv: left pad K - s
            hop *= stride
            layers = self.encoder_transformer_layers[i]
            r += layers * (self.encoder_window - 1) * hop
        r += 2 * hop  # encoder.block.6, k = 3
        for factor in self.downsample_factor:
            hop *= factor  # strided conv k = s adds nothing; the ConvNeXt dw-conv (k = 7) does
            r += 6 * hop
        r += self.quantizer_layers * (self.quantizer_window - 1) * hop
        return r


# ----------------------------------------------------------------------------- building blocks


class Snake(nn.Module):
    """y = x + 1/(alpha + 1e-9) * sin(alpha * x)^2, per channel (upstream's operation order)."""

    def __init__(self, channels: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        alpha = self.alpha
        y = torch.sin(alpha * x).pow_(2)
        # In place: one temporary instead of four at 64 ch x 44.1 kHz; the same values as x + r * s2.
        return y.mul_((alpha + 1e-9).reciprocal()).add_(x)


class CausalConv1d(nn.Module):
    """Conv1d padded on the left by K - s (and on the right up to a multiple of the stride)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        weight_norm: bool = True,
    ):
        super().__init__()
        conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation, groups=groups)
        # New-style weight norm: keys `conv.parametrizations.weight.original{0,1}`, torch's fused kernel.
        self.conv = parametrizations.weight_norm(conv) if weight_norm else conv
        self.stride = stride
        self.left_pad = (kernel_size - 1) * dilation + 1 - stride

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[-1]
        right_pad = math.ceil(length / self.stride) * self.stride - length
        return F.pad(x, (self.left_pad, right_pad)) if self.left_pad or right_pad else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d trimmed by K - s samples on the right: L frames in, L * s samples out."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, weight_norm: bool):
        super().__init__()
        conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.conv = parametrizations.weight_norm(conv) if weight_norm else conv
        self.trim = kernel_size - stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y[..., : y.shape[-1] - self.trim] if self.trim else y


class ResidualUnit(nn.Module):
    """x + conv1x1(Snake(conv7_dilated(Snake(x))))."""

    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(channels),
            CausalConv1d(channels, channels, 7, dilation=dilation),
            Snake(channels),
            CausalConv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        snake1, conv1, snake2, conv2 = self.block
        # Same operations as x + block(x), written so that at most three activations of this size
        # are alive at once (each `h = f(h)` frees the previous one): 64 ch at 44.1 kHz is 11 MB/s.
        h = conv1.pad(snake1(x))
        h = conv1.conv(h)
        h = conv2.pad(snake2(h))
        h = conv2.conv(h)
        return h.add_(x)  # == x + h bit for bit (addition commutes)


class ConvNeXtBlock(nn.Module):
    """Causal depth-wise conv (k 7) -> LayerNorm -> Linear 4x -> GELU -> Linear -> gamma, plus residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.dwconv = CausalConv1d(dim, dim, 7, groups=dim, weight_norm=False)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 1)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        h = (self.gamma * h).permute(0, 2, 1)
        return x + h


# ----------------------------------------------------------------------------- windowed transformer


def rope_table(positions: int, head_dim: int, base: float, start: int = 0, device=None) -> torch.Tensor:
    """RoPE cos/sin table (positions, head_dim/2, 2) in bf16, computed as upstream does (polar, float32)."""
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, head_dim, 2, device=device)[:half].float() / head_dim))
    t = torch.arange(start, start + positions, device=device)
    angle = torch.outer(t, freqs)
    cis = torch.polar(torch.ones_like(angle), angle)
    return torch.stack([cis.real, cis.imag], dim=-1).to(torch.bfloat16)


def apply_rope(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of x (B, T, H, D) by table (T, D/2, 2), in float32."""
    xs = x.float().reshape(*x.shape[:-1], -1, 2)
    t = table.view(1, xs.size(1), 1, xs.size(3), 2)
    out = torch.stack(
        [
            xs[..., 0] * t[..., 0] - xs[..., 1] * t[..., 1],
            xs[..., 1] * t[..., 0] + xs[..., 0] * t[..., 1],
        ],
        dim=-1,
    )
    return out.flatten(3).type_as(x)


def window_mask(queries: int, keys: int, window: int, offset: int = 0, device=None) -> torch.Tensor:
    """Boolean (queries, keys) mask: query i (absolute offset + i) sees key j iff i - window < j <= i."""
    i = torch.arange(offset, offset + queries, device=device)[:, None]
    j = torch.arange(keys, device=device)[None, :] + (offset + queries - keys)
    return (j <= i) & (j > i - window)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 1e-2):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.n_head, self.head_dim = c.n_head, c.head_dim
        inner = c.n_head * c.head_dim
        self.wqkv = nn.Linear(c.dim, 3 * inner, bias=False)
        self.wo = nn.Linear(inner, c.dim, bias=False)

    def forward(
        self, x: torch.Tensor, table: torch.Tensor, window: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        b, t, _ = x.shape
        inner = self.n_head * self.head_dim
        q, k, v = self.wqkv(x).split([inner, inner, inner], dim=-1)
        q = apply_rope(q.view(b, t, self.n_head, self.head_dim), table).transpose(1, 2)
        k = apply_rope(k.view(b, t, self.n_head, self.head_dim), table).transpose(1, 2)
        v = v.view(b, t, self.n_head, self.head_dim).transpose(1, 2)
        if mask is not None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            y = _blockwise_window_attention(q, k, v, window)
        return self.wo(y.transpose(1, 2).contiguous().view(b, t, inner))


def _blockwise_window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int
) -> torch.Tensor:
    """Windowed causal attention in query blocks: memory O(T * window) instead of O(T^2).

    Only used beyond upstream's sequence limit; mathematically identical to the full-mask form.
    """
    t = q.shape[2]
    block = max(window, 256)
    out = []
    for qs in range(0, t, block):
        qe = min(qs + block, t)
        ks = max(0, qs - window + 1)
        mask = window_mask(qe - qs, qe - ks, window, offset=qs, device=q.device)[None, None]
        out.append(
            F.scaled_dot_product_attention(q[:, :, qs:qe], k[:, :, ks:qe], v[:, :, ks:qe], attn_mask=mask)
        )
    return torch.cat(out, dim=2)


class FeedForward(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.w1 = nn.Linear(c.dim, c.intermediate_size, bias=False)
        self.w3 = nn.Linear(c.dim, c.intermediate_size, bias=False)
        self.w2 = nn.Linear(c.intermediate_size, c.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class TransformerBlock(nn.Module):
    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.attention_layer_scale = LayerScale(c.dim)
        self.ffn_layer_scale = LayerScale(c.dim)

    def forward(
        self, x: torch.Tensor, table: torch.Tensor, window: int, mask: torch.Tensor | None
    ) -> torch.Tensor:
        h = x + self.attention_layer_scale(self.attention(self.attention_norm(x), table, window, mask))
        return h + self.ffn_layer_scale(self.feed_forward(self.ffn_norm(h)))


class WindowedTransformer(nn.Module):
    """Causal transformer over (B, C, T) with attention limited to the last `window_size` frames.

    `freqs_cis` (the bf16 RoPE table) is loaded from the checkpoint and used as stored; positions
    past its end are computed with the same formula (as newer upstream does). `causal_mask` exists
    only in the state dict (upstream stores a never-used T x T mask): it is produced on save and
    checked-then-dropped on load, so the 268 MB tensor never sits in memory.
    """

    def __init__(self, c: TransformerConfig):
        super().__init__()
        self.config = c
        self.register_buffer("freqs_cis", rope_table(c.block_size, c.head_dim, c.rope_base))
        self.layers = nn.ModuleList(TransformerBlock(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self._extra_table: torch.Tensor | None = None

    def table(self, length: int) -> torch.Tensor:
        stored = self.freqs_cis
        if length <= stored.shape[0]:
            return stored[:length]
        extra = self._extra_table
        if extra is None or extra.shape[0] < length - stored.shape[0] or extra.device != stored.device:
            c = self.config
            extra = rope_table(
                length - stored.shape[0], c.head_dim, c.rope_base, stored.shape[0], stored.device
            )
            self._extra_table = extra
        return torch.cat([stored, extra[: length - stored.shape[0]]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.transpose(1, 2)
        t, window = h.shape[1], self.config.window_size
        table = self.table(t)
        # Within upstream's limit: one (1, 1, T, T) boolean mask and a single SDPA call per layer,
        # exactly upstream's computation. Beyond it (long inputs only): block-wise, O(T * window).
        mask = window_mask(t, t, window, device=h.device)[None, None] if t <= self.config.block_size else None
        for layer in self.layers:
            h = layer(h, table, window, mask)
        return self.norm(h).transpose(1, 2)

    # -- causal_mask: in the file, never in memory
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        n = self.config.block_size
        destination[prefix + "causal_mask"] = torch.ones(
            n, n, dtype=torch.bool, device=self.freqs_cis.device
        ).tril()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        mask = state_dict.pop(prefix + "causal_mask", None)
        n = self.config.block_size
        if mask is not None and (tuple(mask.shape) != (n, n) or mask.dtype != torch.bool):
            errors.append(
                f"{prefix}causal_mask: expected bool {(n, n)}, got {mask.dtype} {tuple(mask.shape)}"
            )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        if prefix + "freqs_cis" in state_dict:
            self._extra_table = None


# ----------------------------------------------------------------------------- encoder / decoder


class EncoderBlock(nn.Module):
    """Residual units (d = 1, 3, 9) on dim/2 channels, Snake, strided conv to dim, optional transformer."""

    def __init__(self, dim: int, stride: int, transformer: TransformerConfig | None):
        super().__init__()
        half = dim // 2
        self.block = nn.Sequential(
            ResidualUnit(half, 1),
            ResidualUnit(half, 3),
            ResidualUnit(half, 9),
            Snake(half),
            CausalConv1d(half, dim, 2 * stride, stride=stride),
            WindowedTransformer(transformer) if transformer else nn.Identity(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Encoder(nn.Module):
    def __init__(self, c: CodecConfig):
        super().__init__()
        width = c.encoder_dim
        blocks: list[nn.Module] = [CausalConv1d(1, width, 7)]
        for stride, layers in zip(c.encoder_rates, c.encoder_transformer_layers, strict=True):
            width *= 2
            blocks.append(
                EncoderBlock(width, stride, c.encoder_transformer(width, layers) if layers else None)
            )
        blocks += [Snake(width), CausalConv1d(width, width, 3)]
        self.block = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Run the encoder blocks' layers in one flat loop: a nested call would keep each block's
        # input alive until the block returns (one more 11 MB-per-second activation at the peak).
        for layer in self.block:
            if isinstance(layer, EncoderBlock):
                for sub in layer.block:
                    x = sub(x)
            else:
                x = layer(x)
        return x


class DecoderBlock(nn.Module):
    """Snake, causal transposed conv (k = 2s, stride s) to dim_out, residual units (d = 1, 3, 9)."""

    def __init__(self, dim_in: int, dim_out: int, stride: int):
        super().__init__()
        self.block = nn.Sequential(
            Snake(dim_in),
            CausalConvTranspose1d(dim_in, dim_out, 2 * stride, stride, weight_norm=True),
            ResidualUnit(dim_out, 1),
            ResidualUnit(dim_out, 3),
            ResidualUnit(dim_out, 9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class Decoder(nn.Module):
    def __init__(self, c: CodecConfig):
        super().__init__()
        width = c.decoder_dim
        layers: list[nn.Module] = [CausalConv1d(c.latent_dim, width, 7)]
        for stride in c.decoder_rates:
            layers.append(DecoderBlock(width, width // 2, stride))
            width //= 2
        layers += [Snake(width), CausalConv1d(width, 1, 7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ----------------------------------------------------------------------------- quantizer


class WNConv1x1(nn.Module):
    """1x1 Conv1d with old-style weight norm (keys `bias`, `weight_g`, `weight_v`), as in DAC's VQ."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_channels))
        v = torch.empty(out_channels, in_channels, 1)
        nn.init.kaiming_uniform_(v, a=math.sqrt(5))
        self.weight_g = nn.Parameter(torch.linalg.vector_norm(v, dim=(1, 2), keepdim=True))
        self.weight_v = nn.Parameter(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, torch._weight_norm(self.weight_v, self.weight_g, 0), self.bias)


class VectorQuantizer(nn.Module):
    """Project to 8-d, nearest codebook entry by cosine (in upstream's distance form), project back."""

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.in_proj = WNConv1x1(dim, codebook_dim)
        self.out_proj = WNConv1x1(codebook_dim, dim)
        self.codebook = nn.Embedding(codebook_size, codebook_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, dim, T) -> (codes (B, T) int64, quantized output (B, dim, T))."""
        if torch.is_autocast_enabled(x.device.type):
            # Under bf16 autocast (GPU speed mode) still pick codes in float32.
            with torch.autocast(x.device.type, enabled=False):
                return self.forward(x.float())
        z_e = self.in_proj(x)
        b = z_e.shape[0]
        enc = F.normalize(z_e.permute(0, 2, 1).reshape(-1, z_e.shape[1]))
        book = F.normalize(self.codebook.weight)
        dist = enc.pow(2).sum(1, keepdim=True) - 2 * enc @ book.t() + book.pow(2).sum(1, keepdim=True).t()
        codes = (-dist).max(1)[1].view(b, -1)
        z_q = F.embedding(codes, self.codebook.weight).transpose(1, 2)
        # Straight-through form: differs from out_proj(z_q) in the last bits, and upstream uses it.
        return codes, self.out_proj(z_e + (z_q - z_e))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.out_proj(F.embedding(codes, self.codebook.weight).transpose(1, 2))


class ResidualVQ(nn.Module):
    def __init__(self, dim: int, n: int, codebook_size: int, codebook_dim: int):
        super().__init__()
        self.quantizers = nn.ModuleList(VectorQuantizer(dim, codebook_size, codebook_dim) for _ in range(n))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns codes (B, n, T) and the summed quantized output."""
        codes, total, residual = [], 0, x
        for i, q in enumerate(self.quantizers):
            c, out = q(residual)
            codes.append(c)
            total = total + out
            if i + 1 < len(self.quantizers):
                residual = residual - out
        return torch.stack(codes, dim=1), total

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        total = 0
        for i, q in enumerate(self.quantizers):
            total = total + q.decode(codes[:, i])
        return total


class Quantizer(nn.Module):
    """Down-sample x4, pre-transformer, semantic VQ, nine residual VQ stages (and the decode direction)."""

    def __init__(self, c: CodecConfig):
        super().__init__()
        d = c.latent_dim
        self.semantic_quantizer = ResidualVQ(d, 1, c.semantic_codebook_size, c.codebook_dim)
        self.quantizer = ResidualVQ(d, c.n_codebooks, c.codebook_size, c.codebook_dim)
        self.downsample = nn.Sequential(
            *(
                nn.Sequential(CausalConv1d(d, d, f, stride=f, weight_norm=False), ConvNeXtBlock(d))
                for f in c.downsample_factor
            )
        )
        self.upsample = nn.Sequential(
            *(
                nn.Sequential(CausalConvTranspose1d(d, d, f, f, weight_norm=False), ConvNeXtBlock(d))
                for f in reversed(c.downsample_factor)
            )
        )
        self.pre_module = WindowedTransformer(c.quantizer_transformer)
        self.post_module = WindowedTransformer(c.quantizer_transformer)
        self.semantic_codebook_size = c.semantic_codebook_size
        self.codebook_size = c.codebook_size

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, D, T/512) -> codes (B, 10, T/2048)."""
        z = self.pre_module(self.downsample(z))
        semantic_codes, s = self.semantic_quantizer.encode(z)
        residual_codes, _ = self.quantizer.encode(z - s)
        return torch.cat([semantic_codes, residual_codes], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, 10, F) -> latent (B, D, F * 4) for the decoder."""
        semantic = codes[:, :1].clamp(0, self.semantic_codebook_size - 1)
        residual = codes[:, 1:].clamp(0, self.codebook_size - 1)
        z = self.semantic_quantizer.decode(semantic) + self.quantizer.decode(residual)
        return self.upsample(self.post_module(z))


# ----------------------------------------------------------------------------- the codec


class Codec(nn.Module):
    """Encoder + quantizer + decoder with upstream's parameter names (`encoder.*`, `quantizer.*`, `decoder.*`)."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = Quantizer(config)
        self.decoder = Decoder(config)

    @property
    def device(self) -> torch.device:
        return self.quantizer.pre_module.freqs_cis.device

    @property
    def has_decoder(self) -> bool:
        return self.decoder is not None

    def drop_decoder(self) -> Codec:
        """Remove the decode-only parts (decoder, post-module, up-sampling): half the weights of S1-mini."""
        self.decoder = None
        self.quantizer.post_module = None
        self.quantizer.upsample = None
        return self

    def frames_for(self, samples: int) -> int:
        """Code frames for `samples` input samples at 44.1 kHz: ceil(N / 2048)."""
        return -(-int(samples) // self.config.frame_length)

    def _encode_padded(self, audio: torch.Tensor) -> torch.Tensor:
        frame = self.config.frame_length
        pad = -audio.shape[-1] % frame
        if pad:
            audio = F.pad(audio, (0, pad))
        with parametrize.cached():
            return self.quantizer.encode(self.encoder(audio))

    @torch.inference_mode()
    def encode(
        self, audio: torch.Tensor, lengths: torch.Tensor | None = None, max_window_samples: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B, 1, T) or (B, T) float at 44.1 kHz, lengths (B,) -> codes (B, 10, F) int64, frame counts (B,).

        F = ceil(T / 2048). Items are right-padded with zeros to a multiple of 2048 (every layer is
        causal, so padding never changes an item's own frames). Inputs up to `max_window_samples`
        (default: upstream's limit, 190.2 s) take one pass, exactly as upstream; longer inputs are
        encoded item by item in overlapping windows (`encode_long`).
        """
        if audio.ndim == 2:
            audio = audio.unsqueeze(1)
        if audio.ndim != 3 or audio.shape[1] != 1:
            raise ValueError(f"expected audio shaped (B, 1, T), got {tuple(audio.shape)}")
        b, _, t = audio.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long)
        frame_lengths = torch.div(
            lengths.to(torch.long) + self.config.frame_length - 1,
            self.config.frame_length,
            rounding_mode="floor",
        )
        limit = max_window_samples or self.config.max_input_samples
        if t <= limit:
            return self._encode_padded(audio), frame_lengths
        frames = self.frames_for(t)
        codes = torch.stack(
            [self.encode_long(audio[i, 0], max_window_samples=limit)[:, :frames] for i in range(b)]
        )
        return codes, frame_lengths

    @torch.inference_mode()
    def encode_long(
        self, audio: torch.Tensor, max_window_samples: int | None = None, context_samples: int | None = None
    ) -> torch.Tensor:
        """Encode one long waveform (T,) in overlapping windows; returns codes (10, ceil(T / 2048)).

        Every layer is causal and both transformers only look `window` frames back, so a code frame
        depends on at most `receptive_field_samples` (71.5 s for S1-mini) of past audio. Each window
        therefore carries that much left context (frame-aligned) and keeps only the codes after it.
        The result equals one pass over the whole input with the RoPE table extended by its formula
        (which is what newer upstream does), up to float rounding; memory stays bounded by the window.
        """
        frame = self.config.frame_length
        if context_samples is None:
            context_samples = self.config.receptive_field_samples
        context = -(-context_samples // frame) * frame
        window = max_window_samples or self.config.max_input_samples
        step = max(max(window - context, window // 2) // frame * frame, frame)
        length = audio.shape[-1]
        starts = list(range(0, length, step))
        # Windows whose context would reach back to sample 0 are merged into one pass from 0.
        first = [s for s in starts if s <= context]
        out = [self._encode_padded(audio[: first[-1] + step].view(1, 1, -1))[0]]
        for start in starts[len(first) :]:
            left = start - context
            codes = self._encode_padded(audio[left : start + step].view(1, 1, -1))[0]
            out.append(codes[:, context // frame :])
        return torch.cat(out, dim=1)[:, : self.frames_for(length)]

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, 10, F) or (10, F) int -> audio (B, 1, F * 2048) in [-1, 1]."""
        if codes.ndim == 2:
            codes = codes.unsqueeze(0)
        if codes.ndim != 3 or codes.shape[1] != self.config.num_codebooks:
            raise ValueError(
                f"expected codes shaped (B, {self.config.num_codebooks}, F), got {tuple(codes.shape)}"
            )
        if not self.has_decoder:
            raise RuntimeError("this codec was loaded with encode_only=True and cannot decode")
        with parametrize.cached():
            return self.decoder(self.quantizer.decode(codes.to(self.device, torch.long)))
