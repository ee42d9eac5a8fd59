"""The `fish-speech` command: one sub-command per step of the upstream fine-tuning recipe.

Each sub-command lives in `fish_speech/commands/<name>.py` and exposes `HELP`, `add_arguments(parser)`
and `run(args) -> int`. Command modules import nothing heavy at module level (no torch), so that
`fish-speech validate` and the other data commands start fast; heavy imports happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fish_speech import __version__
from fish_speech.errors import UserError
from fish_speech.logs import setup_logging

# sub-command name -> module under fish_speech.commands (order = order in --help)
COMMANDS: dict[str, str] = {
    "fetch-weights": "fetch_weights",
    "fetch-data": "fetch_data",
    "validate": "validate",
    "normalize": "normalize",
    "extract-vq": "extract_vq",
    "build-dataset": "build_dataset",
    "train": "train",
    "evaluate": "evaluate",
    "merge-lora": "merge_lora",
    "decode-vq": "decode_vq",
    "parity-logits": "parity_logits",
    "synthesize": "synthesize",
    "publish": "publish",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fish-speech",
        description="Fine-tune the text-to-semantic model of Fish Speech / OpenAudio S1-mini with LoRA.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"fish_speech.commands.{module_name}")
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def permission_message(e: PermissionError) -> str:
    """One line for a folder this user may not write: who the process is, and how a pod gets the right."""
    where = e.filename or "a file"
    who = f"UID {os.getuid()}, groups {','.join(str(g) for g in sorted({os.getgid(), *os.getgroups()}))}"
    return (
        f"{where}: permission denied ({who}); on a Kubernetes volume (the workspace PVC) give the pod's group "
        "write access: securityContext fsGroup, or once `kubectl apply -k manifests/prepare-workspace` "
        "(README > Kubeflow pipeline > Workspace volume)"
    )


# The last one-line error `main` printed ("COMMAND: message"), for callers that run commands
# in-process and report why one failed (fish_speech.steps.common.run_command).
last_error: str | None = None


def main(argv: list[str] | None = None) -> int:
    global last_error
    last_error = None
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        last_error = f"{args.command}: {e}"
        print(f"fish-speech {args.command}: error: {e}", file=sys.stderr)
        return e.exit_status
    except PermissionError as e:
        last_error = f"{args.command}: {permission_message(e)}"
        print(f"fish-speech {args.command}: error: {permission_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fish-speech {args.command}: interrupted", file=sys.stderr)
        return 130
