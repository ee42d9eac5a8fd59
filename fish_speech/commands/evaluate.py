"""`fish-speech evaluate`: score the base model and chosen checkpoints on held-out sentences; pick one."""

from __future__ import annotations

import argparse

HELP = (
    "synthesize held-out sentences with the base model and LoRA checkpoints, score them (CER/WER by ASR, "
    "speaker similarity, duration), choose a checkpoint; writes eval.json, eval.csv and report.html"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from fish_speech.evaluate.choice import DEFAULT_CER_MARGIN, DEFAULT_SIMILARITY_MARGIN
    from fish_speech.evaluate.models import DEFAULT_ASR, DEFAULT_SPEAKER_MODEL
    from fish_speech.text2semantic.options import SamplingSettings

    sampling = SamplingSettings()

    p.add_argument(
        "--base-weight", required=True, metavar="DIR", help="base checkpoint folder (with codec.pth)"
    )
    p.add_argument(
        "--train-output", required=True, metavar="RUN", help="the folder `fish-speech train` wrote"
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="DATA",
        help="the clip folder the protos were built from (clips, .lab transcripts, .npy codes)",
    )
    p.add_argument(
        "--codes",
        action="append",
        metavar="DIR",
        help="folder with the codes at the clips' relative paths, as build-dataset --codes; repeatable",
    )
    p.add_argument(
        "--output", required=True, metavar="EVAL", help="folder for eval.json, eval.csv, report.html"
    )
    p.add_argument(
        "--checkpoints",
        default="earliest,best,last",
        help="earliest,best,last (default) | all | step_N,... (the base model is always scored)",
    )
    p.add_argument("--sentences", type=int, default=8, help="held-out sentences to score (default 8)")
    p.add_argument(
        "--asr", default=DEFAULT_ASR, metavar="SOURCE", help=f"Whisper model (default {DEFAULT_ASR}; tiny)"
    )
    p.add_argument(
        "--speaker-model",
        default=DEFAULT_SPEAKER_MODEL,
        metavar="SOURCE",
        help=f"WavLM x-vector model (default {DEFAULT_SPEAKER_MODEL}; tiny)",
    )
    p.add_argument(
        "--model-cache",
        metavar="DIR",
        help="where fetched ASR/speaker models are kept (default ~/.cache/fish-speech/eval-models)",
    )
    p.add_argument("--asr-language", help="language code for Whisper (default: detected)")
    p.add_argument(
        "--seed", type=int, default=42, help="sentence i uses seed + i, for every candidate (default 42)"
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda[:N]")
    p.add_argument("--batch-size", type=int, default=8, help="sentences generated at once (default 8)")
    p.add_argument("--temperature", type=float, default=sampling.temperature)
    p.add_argument("--top-p", type=float, default=sampling.top_p)
    p.add_argument("--repetition-penalty", type=float, default=sampling.repetition_penalty)
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="frames per sentence (default: 2 x the longest real sentence + 64, at most 1024)",
    )
    p.add_argument(
        "--similarity-margin",
        type=float,
        default=DEFAULT_SIMILARITY_MARGIN,
        help=f"a checkpoint within this of the best similarity counts as as good (default {DEFAULT_SIMILARITY_MARGIN})",
    )
    p.add_argument(
        "--cer-margin",
        type=float,
        default=DEFAULT_CER_MARGIN,
        help=f"largest CER rise over the base model that is accepted (default {DEFAULT_CER_MARGIN})",
    )
    p.add_argument("--lora-config", help="LoRA config (default: the one train recorded)")
    p.add_argument(
        "--overwrite", action="store_true", help="evaluate again even if eval.json matches the inputs"
    )


def run(args: argparse.Namespace) -> int:
    from fish_speech.evaluate.run import EvalOptions, evaluate

    result = evaluate(
        EvalOptions(
            base_weight=args.base_weight,
            train_output=args.train_output,
            data=args.data,
            output=args.output,
            codes=args.codes or [],
            checkpoints=args.checkpoints,
            sentences=args.sentences,
            asr=args.asr,
            speaker_model=args.speaker_model,
            model_cache=args.model_cache,
            asr_language=args.asr_language,
            seed=args.seed,
            device=args.device,
            batch_size=args.batch_size,
            temperature=args.temperature,
            top_p=args.top_p,
            repetition_penalty=args.repetition_penalty,
            max_new_tokens=args.max_new_tokens,
            similarity_margin=args.similarity_margin,
            cer_margin=args.cer_margin,
            lora_config=args.lora_config,
            overwrite=args.overwrite,
        )
    )
    choice = result["choice"]
    print(
        f"chosen: {choice['chosen']} ({choice['reason']}); "
        f"{'beats' if choice['beats_base'] else 'does not beat'} the base: {choice['beats_base_reason']}"
    )
    print(f"report: {args.output}/report.html")
    return 0
