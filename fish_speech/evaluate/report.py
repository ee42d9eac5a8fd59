"""Evaluation outputs: `eval.json` (every number, the choice and why), `eval.csv` and `report.html`.

The HTML page is self-contained (the Kubeflow UI shows HTML artifacts in a sandboxed frame that cannot
fetch other URLs): the plot is an embedded PNG and every audio player an embedded MP3 (mono, 22.05 kHz,
about 27 kbit/s: about 17 KB for 5 s). Its size is bounded: when the players would push the page past
`MAX_HTML_BYTES`, the later sentences are shown without players (said on the page and in eval.json).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fish_speech.fileio import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

PREVIEW_SAMPLE_RATE = 22050
PREVIEW_COMPRESSION = 0.9  # libsndfile's MP3 quality knob: ~27 kbit/s mono at 22.05 kHz
MAX_HTML_BYTES = 6 * 1024 * 1024
REAL = "real"  # the candidate name of the real recordings (the ASR ceiling row)

CSV_FIELDS = (
    "utterance",
    "speaker",
    "candidate",
    "step",
    "cer",
    "wer",
    "similarity",
    "duration_ratio",
    "seconds",
    "failed",
    "seen_in_training",
    "text",
    "transcript",
)


def encode_preview(audio: np.ndarray, sample_rate: int) -> bytes:
    """Mono MP3 bytes of `audio` ((samples,) or (channels, samples) float) for an embedded player."""
    import soundfile as sf
    import torch

    from fish_speech.audio import downmix, resample

    x = downmix(np.asarray(audio, dtype=np.float32))
    if x.size == 0:
        x = np.zeros(PREVIEW_SAMPLE_RATE // 10, np.float32)  # a silent 0.1 s: the player still works
    if sample_rate != PREVIEW_SAMPLE_RATE:
        x = resample(torch.from_numpy(np.ascontiguousarray(x)), sample_rate, PREVIEW_SAMPLE_RATE).numpy()
    x = np.clip(np.nan_to_num(x), -1.0, 1.0)
    buf = io.BytesIO()
    sf.write(
        buf,
        x,
        PREVIEW_SAMPLE_RATE,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=PREVIEW_COMPRESSION,
    )
    return buf.getvalue()


def _num(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return html.escape(str(x))


def write_csv(path: str | os.PathLike, result: Mapping[str, Any]) -> None:
    """One row per (sentence, candidate), then one `ALL` row per candidate with its means."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    steps = {c["name"]: c.get("step") for c in result["candidates"]}
    for utt in result["utterances"]:
        for name, s in utt["scores"].items():
            writer.writerow(
                {
                    "utterance": utt["id"],
                    "speaker": utt["speaker"],
                    "candidate": name,
                    "step": steps.get(name),
                    "cer": s.get("cer"),
                    "wer": s.get("wer"),
                    "similarity": s.get("similarity"),
                    "duration_ratio": s.get("duration_ratio"),
                    "seconds": s.get("seconds"),
                    "failed": int(bool(s.get("failed"))),
                    "seen_in_training": int(bool(utt.get("seen_in_training"))),
                    "text": utt["text"],
                    "transcript": s.get("transcript", ""),
                }
            )
    for c in result["candidates"]:
        writer.writerow(
            {
                "utterance": "ALL",
                "speaker": "",
                "candidate": c["name"],
                "step": c.get("step"),
                "cer": c.get("cer"),
                "wer": c.get("wer"),
                "similarity": c.get("similarity"),
                "duration_ratio": c.get("duration_ratio"),
                "failed": c.get("failures"),
            }
        )
    atomic_write_text(path, buf.getvalue())


def plot_png(result: Mapping[str, Any]) -> bytes:
    """Similarity, CER and validation loss against training step (base and real recordings as lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cands = {c["name"]: c for c in result["candidates"]}
    ckpts = sorted((c for c in result["candidates"] if c.get("step") is not None), key=lambda c: c["step"])
    chosen = result.get("choice", {}).get("chosen")
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2), dpi=80)
    panels = (("similarity", "speaker similarity (higher is better)"), ("cer", "CER (lower is better)"))
    for ax, (key, title) in zip(axes[:2], panels, strict=True):
        xs = [c["step"] for c in ckpts if c.get(key) is not None]
        ys = [c[key] for c in ckpts if c.get(key) is not None]
        ax.plot(xs, ys, "o-", color="tab:blue", label="checkpoints")
        for name, style, color in (("base", "--", "tab:gray"), (REAL, ":", "tab:green")):
            if name in cands and cands[name].get(key) is not None:
                ax.axhline(cands[name][key], linestyle=style, color=color, label=name)
        if chosen in cands and cands[chosen].get(key) is not None and cands[chosen].get("step") is not None:
            ax.plot(
                [cands[chosen]["step"]], [cands[chosen][key]], "*", ms=16, color="tab:red", label="chosen"
            )
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    val = result.get("validation_loss") or []
    ax = axes[2]
    if val:
        ax.plot([r["step"] for r in val], [r["loss"] for r in val], ".-", color="tab:orange")
    else:
        ax.text(0.5, 0.5, "no validation loss recorded", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("validation loss (train)", fontsize=10)
    ax.set_xlabel("training step")
    ax.grid(alpha=0.3)
    for ax in axes:
        ax.ticklabel_format(axis="y", useOffset=False)  # absolute values, never "+1.7e1" offsets
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


_CSS = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:8px 0 16px}
th,td{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right;vertical-align:top}
th{background:#f3f3f3} td.l,th.l{text-align:left}
tr.chosen td{background:#fff4c2;font-weight:600} tr.real td{color:#555;font-style:italic}
.box{background:#f7f9fc;border:1px solid #d8e0ef;padding:8px 12px;margin:8px 0}
.bad{color:#a00} .good{color:#060} audio{width:190px;height:32px}
.player{display:inline-block;margin:2px 6px 6px 0;text-align:center;font-size:12px}
.sent{margin:10px 0 18px;border-top:1px solid #ddd;padding-top:6px} small{color:#666}
"""


def render_html(result: Mapping[str, Any], previews: Mapping[tuple[str, str], bytes], plot: bytes) -> str:
    """The report page (see the module docstring); `previews[(utterance id, candidate)]` = MP3 bytes."""
    e = html.escape
    choice = result.get("choice") or {}
    cands = result["candidates"]
    order = [c["name"] for c in cands]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>fish-speech evaluate</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h2>Checkpoint evaluation</h2>",
    ]
    if choice:
        verdict = (
            "<span class='good'>beats the base model</span>"
            if choice.get("beats_base")
            else "<span class='bad'>does not beat the base model</span>"
        )
        flags = ", ".join(choice.get("flags") or []) or "none"
        parts.append(
            f"<div class='box'><b>Chosen: {e(str(choice.get('chosen')))}</b> — {e(choice.get('reason', ''))}.<br>"
            f"Publish gate: {verdict} ({e(choice.get('beats_base_reason', ''))}).<br>"
            f"Flags: {e(flags)}. Margins: similarity {choice.get('similarity_margin')}, "
            f"CER {choice.get('cer_margin')}.</div>"
        )
    opts = result.get("options", {})
    parts.append(
        f"<p><small>{len(result['utterances'])} held-out sentences; ASR {e(str(opts.get('asr', '')))}; "
        f"speaker model {e(str(opts.get('speaker_model', '')))}; seed {e(str(opts.get('seed', '')))}. "
        "Similarity: cosine of speaker embeddings, synthesized vs the mean of the speaker's real held-out "
        "clips (for the real row: each clip vs the others). CER/WER: ASR transcript vs the text, after the "
        "normalisation the README describes. Duration ratio: synthesized / real length.</small></p>"
    )
    for note in result.get("notes", []):
        parts.append(f"<p class='bad'>{e(note)}</p>")

    parts.append(
        "<table><tr><th class='l'>candidate</th><th>step</th><th>val loss</th><th>similarity</th>"
        "<th>CER</th><th>WER</th><th>duration ratio</th><th>failed</th><th>gen. seconds</th></tr>"
    )
    for c in cands:
        cls = "chosen" if c["name"] == choice.get("chosen") else ("real" if c["name"] == REAL else "")
        label = "real recordings (ASR ceiling)" if c["name"] == REAL else c["name"]
        parts.append(
            f"<tr class='{cls}'><td class='l'>{e(label)}</td><td>{_num(c.get('step'))}</td>"
            f"<td>{_num(c.get('val_loss'))}</td><td>{_num(c.get('similarity'))}</td><td>{_num(c.get('cer'))}</td>"
            f"<td>{_num(c.get('wer'))}</td><td>{_num(c.get('duration_ratio'), 2)}</td>"
            f"<td>{_num(c.get('failures'))}/{_num(c.get('utterances'))}</td>"
            f"<td>{_num(c.get('generation_seconds'), 1)}</td></tr>"
        )
    parts.append("</table>")
    parts.append(
        f"<img alt='scores against step' src='data:image/png;base64,{base64.b64encode(plot).decode()}'>"
    )

    speakers = result.get("speakers") or {}
    if len(speakers) > 1:
        parts.append("<h3>Per speaker</h3><table><tr><th class='l'>speaker</th>")
        parts += [f"<th>{e(n)}<br>sim / CER</th>" for n in order]
        parts.append("</tr>")
        for spk, by in speakers.items():
            cells = "".join(
                f"<td>{_num(by.get(n, {}).get('similarity'))} / {_num(by.get(n, {}).get('cer'))}</td>"
                for n in order
            )
            parts.append(f"<tr><td class='l'>{e(spk)}</td>{cells}</tr>")
        parts.append("</table>")

    parts.append("<h3>Listen</h3>")
    shown = result.get("players_shown", len(result["utterances"]))
    for i, utt in enumerate(result["utterances"]):
        seen = " <span class='bad'>(seen in training)</span>" if utt.get("seen_in_training") else ""
        parts.append(
            f"<div class='sent'><b>{e(utt['id'])}</b> · {e(utt['speaker'])}{seen}: “{e(utt['text'])}”<br>"
        )
        for name in order:
            s = utt["scores"].get(name)
            if s is None:
                continue
            data = previews.get((utt["id"], name)) if i < shown else None
            tip = e(f"ASR: {s.get('transcript', '')}")
            if s.get("failed"):
                stats = "<span class='bad'>no audio</span>"
            else:
                stats = f"CER {_num(s.get('cer'), 2)} · sim {_num(s.get('similarity'), 2)}"
            player = (
                f"<audio controls preload='metadata' src='data:audio/mpeg;base64,{base64.b64encode(data).decode()}'>"
                "</audio>"
                if data is not None
                else "<small>(not embedded)</small>"
            )
            parts.append(
                f"<span class='player' title='{tip}'>{e(name)}<br>{player}<br><small>{stats}</small></span>"
            )
        parts.append("</div>")
    if shown < len(result["utterances"]):
        parts.append(
            f"<p class='bad'>Players of the last {len(result['utterances']) - shown} sentences left out to keep "
            f"the page under {MAX_HTML_BYTES // 2**20} MiB; their audio is in the audio/ folder.</p>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)


def write_outputs(
    out_dir: str | os.PathLike,
    result: dict[str, Any],
    audio: Mapping[tuple[str, str], tuple[np.ndarray, int]],
) -> dict[str, Path]:
    """Write `eval.json`, `eval.csv` and `report.html` into `out_dir` (each atomically); return their paths.

    `audio[(utterance id, candidate)] = (samples, sample_rate)`.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    previews = {key: encode_preview(x, sr) for key, (x, sr) in audio.items()}
    plot = plot_png(result)
    # keep whole sentences' players while the page stays under the limit
    budget = MAX_HTML_BYTES - 200_000 - len(plot) * 4 // 3
    shown = 0
    for utt in result["utterances"]:
        cost = sum(len(v) * 4 // 3 + 300 for k, v in previews.items() if k[0] == utt["id"])
        if cost > budget:
            break
        budget -= cost
        shown += 1
    result["players_shown"] = shown
    page = render_html(result, previews, plot)
    paths = {"json": out / "eval.json", "csv": out / "eval.csv", "html": out / "report.html"}
    atomic_write_text(paths["json"], json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    write_csv(paths["csv"], result)
    atomic_write_bytes(paths["html"], page.encode("utf-8"))
    log.info("report: %s (%.2f MB)", paths["html"], len(page) / 1e6)
    return paths
