"""LoRA for the DualAR text-to-semantic model, with `peft`, in upstream's checkpoint naming.

Upstream (d3df505, `loralib`) adapts, in the `r_8_alpha_16` config, the three embedding tables, both
output heads and every `wqkv`, `wo`, `w1`, `w2`, `w3` of the slow and fast blocks (`fish_speech/models/text2semantic/lora.py`). `peft`
wraps exactly the same layers when given the same names, keeps the loaded base weights (upstream
re-randomised them, a bug we do not copy) and has the same maths: Linear `y = Wx + s·B(A(drop(x)))`,
Embedding `y = W[ids] + s·(Aᵀ[ids])Bᵀ` without dropout, `s = alpha / r`.

Checkpoints use upstream's names (`model.<path>.lora_A` / `lora_B`, as upstream's `lit_module.py` saves them), so upstream's
`merge_lora` reads ours and ours reads upstream's. Training glue only: the model file knows nothing
of LoRA.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fish_speech.errors import UserError
from fish_speech.tensors import read_checkpoint
from fish_speech.text2semantic.options import DEFAULT_LORA_CONFIG

log = logging.getLogger(__name__)

EMBEDDING_MODULES = ("embeddings", "codebook_embeddings", "fast_embeddings")
_BLOCK_LINEARS = ("wqkv", "wo", "w1", "w2", "w3")
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraSpec:
    """One LoRA configuration: rank, alpha, dropout and which modules it adapts.

    `targets` follows peft's rule: a tuple matches a module whose dotted path equals a name or ends
    with `.name`; a string is a regular expression that must match the whole path.
    """

    name: str
    r: int
    alpha: float
    dropout: float
    targets: tuple[str, ...] | str

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def matches(self, module_path: str) -> bool:
        """True when LoRA adapts the module at `module_path` (same rule as peft)."""
        if isinstance(self.targets, str):
            return re.fullmatch(self.targets, module_path) is not None
        return any(module_path == t or module_path.endswith("." + t) for t in self.targets)

    def to_peft(self):
        """The equivalent `peft.LoraConfig`."""
        import peft

        targets = self.targets if isinstance(self.targets, str) else list(self.targets)
        return peft.LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets, bias="none"
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "r": self.r,
            "alpha": self.alpha,
            "dropout": self.dropout,
            "targets": self.targets if isinstance(self.targets, str) else list(self.targets),
        }


# upstream's fish_speech/configs/lora/*.yaml
LORA_CONFIGS: dict[str, LoraSpec] = {
    DEFAULT_LORA_CONFIG: LoraSpec(
        DEFAULT_LORA_CONFIG,
        r=8,
        alpha=16,
        dropout=0.01,
        targets=(*_BLOCK_LINEARS, "output", "fast_output", *EMBEDDING_MODULES),
    ),
    # HEAD-only config: the fast transformer alone (22 adapted weights on S1-mini)
    "r_32_alpha_16_fast": LoraSpec(
        "r_32_alpha_16_fast",
        r=32,
        alpha=16,
        dropout=0.1,
        targets=r"fast_layers\.\d+\.(attention\.(wqkv|wo)|feed_forward\.(w1|w2|w3))|fast_embeddings|fast_output",
    ),
}


def resolve_lora_spec(
    name: str | None = DEFAULT_LORA_CONFIG,
    r: int | None = None,
    alpha: float | None = None,
    dropout: float | None = None,
) -> LoraSpec:
    """A named config (`r_8_alpha_16`, `r_32_alpha_16_fast`), optionally with r/alpha/dropout overridden.

    A name of the form `r_<R>_alpha_<A>` that is not predefined gets the default module set.
    """
    name = name or DEFAULT_LORA_CONFIG
    spec = LORA_CONFIGS.get(name)
    if spec is None:
        m = re.fullmatch(r"r_(\d+)_alpha_(\d+(?:\.\d+)?)", name)
        if not m:
            raise UserError(
                f"unknown --lora-config {name!r}; known: {', '.join(LORA_CONFIGS)} or r_<R>_alpha_<A>"
            )
        base = LORA_CONFIGS[DEFAULT_LORA_CONFIG]
        spec = LoraSpec(name, int(m.group(1)), float(m.group(2)), base.dropout, base.targets)
    if r is not None or alpha is not None or dropout is not None:
        r = spec.r if r is None else r
        alpha = spec.alpha if alpha is None else alpha
        dropout = spec.dropout if dropout is None else dropout
        spec = LoraSpec(f"r_{r}_alpha_{alpha:g}", r, alpha, dropout, spec.targets)
    if spec.r <= 0 or spec.alpha <= 0 or not 0 <= spec.dropout < 1:
        raise UserError(f"invalid LoRA settings: r={spec.r}, alpha={spec.alpha}, dropout={spec.dropout}")
    return spec


def setup_lora(model: nn.Module, spec: LoraSpec) -> nn.Module:
    """Wrap the adapted layers of `model` in place with peft LoRA layers; freeze everything else.

    Base weights are untouched (the wrapped layer keeps its own tensor); the adapter matrices are
    float32 whatever the base dtype, so bf16 training keeps full-precision LoRA weights.
    """
    import peft

    if not any(spec.matches(name) for name, _ in model.named_modules()):
        raise UserError(f"LoRA config {spec.name}: no module of the model matches its targets {spec.targets}")
    peft.inject_adapter_in_model(spec.to_peft(), model, adapter_name=ADAPTER_NAME)
    for name, p in model.named_parameters():
        is_lora = _is_lora_name(name)
        p.requires_grad_(is_lora)
        if is_lora and p.dtype != torch.float32 and p.device.type != "meta":
            p.data = p.data.float()
    return model


def _is_lora_name(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name or ".lora_embedding_" in name


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs that training updates: the LoRA matrices."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for _, p in trainable_parameters(model))


def _adapter_map(model: nn.Module) -> dict[str, tuple[str, str]]:
    """upstream LoRA name (`model.<path>.lora_A`) -> (internal parameter name, 'linear'|'embedding')."""
    out: dict[str, tuple[str, str]] = {}
    for name, _ in model.named_parameters():
        for internal, kind, ab in (
            (f".lora_A.{ADAPTER_NAME}.weight", "linear", "A"),
            (f".lora_B.{ADAPTER_NAME}.weight", "linear", "B"),
            (f".lora_embedding_A.{ADAPTER_NAME}", "embedding", "A"),
            (f".lora_embedding_B.{ADAPTER_NAME}", "embedding", "B"),
        ):
            if name.endswith(internal):
                path = name[: -len(internal)]
                out[f"model.{path}.lora_{ab}"] = (name, kind)
    return out


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter tensors under upstream's checkpoint names, in module order (detached, as stored)."""
    params = dict(model.named_parameters())
    return {up: params[internal].detach() for up, (internal, _) in _adapter_map(model).items()}


def to_internal_names(model: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename upstream LoRA names to the model's parameter names (unknown names are kept)."""
    amap = _adapter_map(model)
    return {amap[k][0] if k in amap else k: v for k, v in state.items()}


def normalize_lora_keys(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only LoRA tensors, named `model.<path>.lora_A|B` (also accepts peft-style names)."""
    out = {}
    for key, value in state.items():
        k = key
        for prefix in ("base_model.model.", "model."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
                break
        k = re.sub(rf"\.lora_(?:embedding_)?([AB])\.{ADAPTER_NAME}(?:\.weight)?$", r".lora_\1", k)
        if k.endswith((".lora_A", ".lora_B")):
            out["model." + k] = value
    return out


def check_lora_state(
    expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], spec: LoraSpec, source: str
) -> None:
    """Raise a UserError naming `source` unless `state` holds exactly the expected adapter set/shapes."""
    missing = [k for k in expected if k not in state]
    extra = [k for k in state if k not in expected]
    if not state:
        raise UserError(
            f"{source}: no LoRA tensors (keys named '<path>.lora_A' / '.lora_B') in the checkpoint"
        )
    ranks = {v.shape[0] for k, v in state.items() if k.endswith(".lora_A") and v.ndim == 2}
    if ranks and ranks != {spec.r}:
        raise UserError(
            f"{source}: LoRA rank {sorted(ranks)} does not match --lora-config {spec.name} (r={spec.r}); "
            "pass the config the adapters were trained with"
        )
    if missing or extra:
        raise UserError(
            f"{source}: adapters do not match --lora-config {spec.name} on this base model: "
            f"{len(missing)} missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})"
        )
    for k, shape in expected.items():
        if tuple(state[k].shape) != tuple(shape):
            raise UserError(
                f"{source}: {k} has shape {tuple(state[k].shape)}, the base model needs {tuple(shape)}"
            )


def load_lora_state_dict(
    model: nn.Module, state: Mapping[str, torch.Tensor], spec: LoraSpec, source: str = "LoRA weights"
) -> None:
    """Copy upstream-named adapter tensors into a model prepared by `setup_lora` (strict)."""
    state = normalize_lora_keys(state)
    amap = _adapter_map(model)
    params = dict(model.named_parameters())
    expected = {k: tuple(params[internal].shape) for k, (internal, _) in amap.items()}
    check_lora_state(expected, state, spec, source)
    with torch.no_grad():
        for k, (internal, _) in amap.items():
            params[internal].copy_(state[k].to(params[internal].dtype))


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights in the base layout (peft's `.base_layer` removed, adapters dropped)."""
    out = {}
    for k, v in model.state_dict().items():
        if _is_lora_name(k) or ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v
    return out


def read_lora_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a LoRA checkpoint (ours, or upstream's Lightning `.ckpt`); return upstream-named tensors."""
    path = Path(path)
    obj = read_checkpoint(path, "LoRA checkpoint", mmap=False)
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise UserError(f"{path}: not a LoRA checkpoint (expected a dict with a 'state_dict')")
    state = normalize_lora_keys({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
    if not state:
        raise UserError(f"{path}: no LoRA tensors (keys named '<path>.lora_A' / '.lora_B') in the checkpoint")
    return state


def expected_lora_shapes(base: Mapping[str, torch.Tensor], spec: LoraSpec) -> dict[str, tuple[int, ...]]:
    """Adapter names and shapes that `spec` creates on a model with these base weights (no model needed)."""
    out: dict[str, tuple[int, ...]] = {}
    for key, w in base.items():
        if not key.endswith(".weight") or w.ndim != 2:
            continue
        path = key[: -len(".weight")]
        if not spec.matches(path):
            continue
        rows, cols = w.shape
        if is_embedding_path(path):  # weight (num, dim): A (r, num), B (dim, r)
            out[f"model.{path}.lora_A"], out[f"model.{path}.lora_B"] = (spec.r, rows), (cols, spec.r)
        else:  # weight (out, in): A (r, in), B (out, r)
            out[f"model.{path}.lora_A"], out[f"model.{path}.lora_B"] = (spec.r, cols), (rows, spec.r)
    return out


def is_embedding_path(path: str) -> bool:
    return path.rsplit(".", 1)[-1] in EMBEDDING_MODULES


def merge_lora_weights(
    base: Mapping[str, torch.Tensor],
    lora: Mapping[str, torch.Tensor],
    spec: LoraSpec,
    dtype: torch.dtype | None = None,
    source: str = "LoRA weights",
) -> dict[str, torch.Tensor]:
    """Base state dict with every adapter folded in: `W + s·(B@A)` (Linear), `W + s·(B@A)ᵀ` (Embedding).

    The sum is formed in float32 from the stored tensors and cast once to `dtype` (default: the base
    tensor's own dtype), so the result has one dtype and no repeated-rounding drift.
    """
    lora = normalize_lora_keys(lora)
    check_lora_state(expected_lora_shapes(base, spec), lora, spec, source)
    merged = {}
    for key, w in base.items():
        out_dtype = dtype if (dtype is not None and w.is_floating_point()) else w.dtype
        path = key[: -len(".weight")] if key.endswith(".weight") else None
        a_key = f"model.{path}.lora_A"
        if path is not None and a_key in lora:
            a = lora[a_key].float()
            b = lora[f"model.{path}.lora_B"].float()
            delta = b @ a
            if is_embedding_path(path):
                delta = delta.T
            merged[key] = (w.float() + spec.scaling * delta).to(out_dtype).contiguous()
        else:
            merged[key] = w.to(out_dtype)
    return merged
