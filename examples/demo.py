#!/usr/bin/env python3
"""`make demo`: the whole Kubeflow pipeline, run locally with kfp.local on the bundled demo voice.

Tiny random models (`--base tiny`), 2 extract-vq shards, a few training steps: the point is to watch
every step run, on a CPU, in minutes, and to see where each output lands. Equivalent to

    python pipeline.py --run-local --data examples/demo-voice --base tiny --output runs/demo
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEMO_SENTENCE = "Hello! This is my fine-tuned voice speaking."
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(REPO / "examples" / "demo-voice"), help="clip folder")
    parser.add_argument("--base", default="tiny", help="base model source (default: tiny random model)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show kfp.local's executor details")
    parser.add_argument("--output", default=str(REPO / "runs" / "demo"), help="output folder")
    args = parser.parse_args(argv)

    import pipeline_cli

    started = time.monotonic()
    try:
        out = pipeline_cli.run_local(
            args.data, base=args.base, output=args.output, demo=True, verbose=args.verbose
        )
    except pipeline_cli.LocalRunFailed as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    wall = time.monotonic() - started

    from fish_speech.text2semantic.checkpoint import load_model

    model = load_model(out["published"])
    params = sum(p.numel() for p in model.parameters())

    train = next((m for task, m in out["metrics"].items() if task.endswith("lora-train")), {})
    scored = next((m for task, m in out["metrics"].items() if task.endswith("evaluate")), {})
    validate = next((m for task, m in out["metrics"].items() if task.endswith("validate")), {})
    print()
    print("=" * 78)
    print(f"fish-speech-lora pipeline ran locally in {wall:.0f} s (wall time)")
    print(f"  merged model (published): {out['published']}  ({params:,} parameters, loads)")
    print(f"  merged model (artifact):  {out['merged_model']}")
    print(f"  LoRA checkpoints:         {out['lora_checkpoints']}")
    print(f"  validation report (md):   {out['validation_report']}")
    print(f"  loss curves (html):       {out['loss_plot']}")
    print(f"  checkpoint evaluation:    {out['evaluation_report']}")
    print(f"  run status (md):          {out['status_report']}")
    print(f"  metrics of every step:    {out['summary']}")
    if validate:
        print(
            f"  clips: {validate.get('ok', '?')} ok of {validate.get('clips', '?')}, {validate.get('minutes_ok', '?')} min"
        )
    if train:
        from fish_speech.reports import fmt

        shown = ", ".join(
            f"{k.replace('_', ' ')} {fmt(v)}"
            for k, v in train.items()
            if "loss" in k or "tokens" in k or k == "global_step"
        )
        print(f"  training: {shown}")
    if scored:
        print(
            f"  evaluation: chosen step {scored.get('chosen_step')} (similarity {scored.get('chosen_similarity', 0):.3f}, "
            f"CER {scored.get('chosen_cer', 0):.3f}; base {scored.get('base_similarity', 0):.3f} / "
            f"{scored.get('base_cer', 0):.3f}); random tiny models: the numbers mean nothing, the report is real"
        )
    print("=" * 78)

    # Listen to the model: one sentence with the merged model, the demo speaker as reference (on random
    # tiny weights it is noise; the point is that the path works end to end).
    from fish_speech.cli import main as fish_speech

    wav = Path(args.output) / "listen" / "demo.wav"
    speaker = Path(args.data) / "anna"
    argv = [
        "synthesize",
        "--checkpoint",
        str(out["published"]),
        "--text",
        DEMO_SENTENCE,
        "--output",
        str(wav),
    ]
    if speaker.is_dir():
        argv += ["--reference-dir", str(speaker)]
    if fish_speech([*argv, "--max-new-tokens", "64", "--device", "cpu"]) != 0:
        return 1
    print(f"  synthesized speech:       {wav}  (codes: {wav.with_suffix('.npy')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
