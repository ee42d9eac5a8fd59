"""`fish-speech train` under `torchrun`: two "nodes" (gloo on 127.0.0.1) at batch 2 per rank train
exactly like one process at batch 4; SIGTERM to one rank stops both with a checkpoint, and a
`--resume` rerun ends where an uninterrupted run does."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fish_speech.text2semantic.train import train

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "t2s"
CKPT = DATA / "ckpt"
PROTOS = DATA / "protos" / "00000000.protos"
# LoRA dropout off: dropout masks are drawn per rank, so only without them can 2 × 2 equal 1 × 4
COMMON = dict(max_length=160, num_workers=0, log_every=1, learning_rate=1e-3, lora_dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _lora(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> Path:
    """One process at batch 4, 6 steps, a checkpoint after each (all kept)."""
    out = tmp_path_factory.mktemp("single")
    train(PROTOS, CKPT, out, max_steps=6, batch_size=4, save_every=1, keep_last=0, **COMMON)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(out: Path, max_steps: int, port: int, logs: Path, resume: bool = False) -> list[subprocess.Popen]:
    """Two torchrun agents, one per "node", each with one worker, rendezvous on 127.0.0.1."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONUNBUFFERED": "1"}
    train_args = [
        "train",
        "--data",
        str(PROTOS),
        "--base-weight",
        str(CKPT),
        "--output",
        str(out),
        "--max-steps",
        str(max_steps),
        "--batch-size",
        "2",
        "--max-length",
        "160",
        "--num-workers",
        "0",
        "--log-every",
        "1",
        "--learning-rate",
        "1e-3",
        "--lora-dropout",
        "0",
        "--save-every",
        "2",
        *(["--resume"] if resume else []),
    ]
    procs = []
    for node in (0, 1):
        argv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "2",
            "--nproc-per-node",
            "1",
            "--node-rank",
            str(node),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            "-m",
            "fish_speech",
            *train_args,
        ]
        log = open(logs / f"node{node}{'-resume' if resume else ''}.log", "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def _wait(procs: list[subprocess.Popen], logs: Path, timeout: float = 300) -> list[int]:
    deadline = time.time() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.time())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            tails = "\n".join(f.read_text(errors="replace")[-1500:] for f in sorted(logs.glob("*.log")))
            pytest.fail(f"torchrun did not finish within {timeout} s:\n{tails}")
    return codes


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


@pytest.mark.slow  # two torchrun agents and two workers: ~30 s on a 2-core machine
def test_two_nodes_at_batch_2_equal_one_process_at_batch_4(single, tmp_path):
    out = tmp_path / "ddp"
    codes = _wait(_launch(out, 4, _free_port(), tmp_path), tmp_path)
    logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(tmp_path.glob("*.log")))
    assert codes == [0, 0], logs
    diff = _max_diff(
        _lora(out / "checkpoints" / "step_000000004.ckpt"),
        _lora(single / "checkpoints" / "step_000000004.ckpt"),
    )
    print(f"max |delta| of the LoRA weights after 4 steps, 2 ranks x batch 2 vs 1 x batch 4: {diff:.3g}")
    assert diff <= 1e-6
    # the logged losses are the global batch's, as one process logs them
    two = json.loads((out / "metrics.json").read_text())["train"]
    one = json.loads((single / "metrics.json").read_text())["train"][:4]
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], abs=1e-5)
    assert [r["tokens"] for r in two] == [r["tokens"] for r in one]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    ckpt = torch.load(out / "checkpoints" / "step_000000004.ckpt", map_location="cpu", weights_only=True)
    assert len(ckpt["rng_states_by_rank"]) == 2  # every rank resumes its own RNG streams
    # rank 0 alone wrote: no stray temporary files, one set of outputs
    assert not [p for p in out.rglob(".tmp-*")]


@pytest.mark.slow  # three torchrun launches: ~60 s on a 2-core machine
def test_sigterm_to_one_rank_stops_both_and_resume_matches(single, tmp_path):
    out = tmp_path / "ddp"
    procs = _launch(out, 6, _free_port(), tmp_path)
    deadline = time.time() + 240
    try:
        while not (out / "checkpoints" / "step_000000002.ckpt").exists():
            assert all(p.poll() is None for p in procs), "a torchrun agent exited before the first checkpoint"
            assert time.time() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        workers = _children(procs[1].pid)  # node 1's agent has one child: the rank-1 worker
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGTERM)
    finally:
        codes = _wait(procs, tmp_path)
    logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(tmp_path.glob("*.log")))
    assert all(c != 0 for c in codes), (codes, logs)
    assert logs.count("rerun with --resume") >= 2, logs  # both ranks say it (exit 143 each)
    steps = sorted(p.name for p in (out / "checkpoints").glob("step_*.ckpt"))
    assert steps and steps[-1] != "step_000000006.ckpt", steps
    stopped = steps[-1]  # the step in hand when the signal came, as the uninterrupted run has it
    assert _max_diff(_lora(out / "checkpoints" / stopped), _lora(single / "checkpoints" / stopped)) <= 1e-6

    codes = _wait(_launch(out, 6, _free_port(), tmp_path, resume=True), tmp_path)
    logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in sorted(tmp_path.glob("*resume.log")))
    assert codes == [0, 0], logs
    assert f"resuming from {out / 'checkpoints' / stopped}" in logs
    diff = _max_diff(
        _lora(out / "checkpoints" / "step_000000006.ckpt"),
        _lora(single / "checkpoints" / "step_000000006.ckpt"),
    )
    print(f"max |delta| after SIGTERM to rank 1 and --resume, vs one uninterrupted process: {diff:.3g}")
    assert diff <= 1e-6
