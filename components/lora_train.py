"""lora-train: LoRA checkpoints (Model), losses and tokens/s (Metrics), loss curves (HTML).

Checkpoints go under `checkpoint_root`, in a folder keyed on the inputs, so a retried (preempted) task,
or a rerun on the same data and settings, resumes from the newest complete checkpoint instead of
starting over. `checkpoint_root` is a path on the workspace PVC, or a gs:// / s3:// prefix (pulled at
start, uploaded every 5 minutes and at the end). Empty: the task trains straight into its output
artifact (no resume across pods).
"""

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Model, Output

from components.images import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def lora_train(
    protos: Input[Dataset],
    base_model: Input[Model],
    content_hash: str,
    lora_config: str,
    max_steps: int,
    batch_size: int,
    accumulate_grad_batches: int,
    learning_rate: float,
    val_fraction: float,
    save_every: int,
    checkpoint_root: str,
    gpu_type: str,
    gpu_count: int,
    lora: Output[Model],
    metrics: Output[Metrics],
    loss_plot: Output[HTML],
):
    """`fish-speech train --data PROTOS --base-weight BASE --output RESULTS ... --resume`.

    The accelerator settings are the task's resource request; they are passed so that they stay in
    the inputs of the enclosing DAG, and recorded in the model's metadata.
    """
    import base64
    import hashlib
    import html
    import json
    import shutil
    import tempfile
    import threading
    from pathlib import Path

    from fish_speech.cli import main
    from fish_speech.reports import report_numbers

    sync_seconds = 300  # object-store checkpoint uploads while training

    settings = {
        "protos": protos.uri,
        "base_model": base_model.uri,
        "content_hash": content_hash,
        "lora_config": lora_config,
        "max_steps": int(max_steps),
        "batch_size": int(batch_size),
        "accumulate_grad_batches": int(accumulate_grad_batches),
        "learning_rate": float(learning_rate),
        "val_fraction": float(val_fraction),
        "save_every": int(save_every),
    }
    out = Path(lora.path)
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    remote = (
        f"{checkpoint_root.rstrip('/')}/lora-train/{key}"
        if checkpoint_root.startswith(("gs://", "s3://"))
        else ""
    )
    if remote:
        # An object-store prefix: train in a local folder, pull what an earlier attempt uploaded, and
        # upload new checkpoints every few minutes, so a preempted pod loses at most that much.
        results = Path(tempfile.mkdtemp(prefix="lora-train-"))
        if main(["fetch-data", remote, "--output", str(results)]) != 0:
            print(f"nothing to resume at {remote} (see above): training from the start")
    elif checkpoint_root:
        results = Path(checkpoint_root) / "lora-train" / key
    else:
        results = out

    def upload() -> None:
        if (results / "checkpoints").is_dir() and main(["publish", str(results), remote]) != 0:
            print(f"warning: could not upload checkpoints to {remote}; retrying at the next interval")

    stop = threading.Event()
    if remote:

        def sync() -> None:
            while not stop.wait(sync_seconds):
                upload()

        threading.Thread(target=sync, name="checkpoint-sync", daemon=True).start()

    argv = ["train", "--data", protos.path, "--base-weight", base_model.path, "--output", str(results)]
    argv += ["--lora-config", lora_config, "--max-steps", str(max_steps), "--batch-size", str(batch_size)]
    argv += ["--accumulate-grad-batches", str(accumulate_grad_batches)]
    argv += ["--learning-rate", str(learning_rate), "--val-fraction", str(val_fraction)]
    argv += ["--save-every", str(save_every), "--resume"]
    print(f"training in {results}" + (f" (checkpoints synced to {remote})" if remote else ""))
    try:
        status = main(argv)
    finally:
        stop.set()
    if status != 0:
        raise RuntimeError(f"fish-speech {' '.join(argv)} exited with status {status}")
    if remote:
        upload()

    if results != out:
        out.mkdir(parents=True, exist_ok=True)
        for item in sorted(results.iterdir()):
            if item.name.startswith(".tmp-"):
                continue
            if item.is_dir():
                shutil.copytree(item, out / item.name, dirs_exist_ok=True)
            else:
                shutil.copy2(item, out / item.name)
    if remote:
        shutil.rmtree(results, ignore_errors=True)  # the local working copy; the prefix keeps them
    checkpoints = sorted((out / "checkpoints").glob("step_*.ckpt"))
    if not checkpoints:
        raise RuntimeError(f"{results}/checkpoints holds no step_*.ckpt after training")

    for name in ("summary.json", "metrics.json"):
        if (out / name).is_file():
            values = json.loads((out / name).read_text(encoding="utf-8"))
            if isinstance(values, dict):
                for key, value in report_numbers(values).items():
                    metrics.log_metric(key, value)
            break
    metrics.log_metric("checkpoints", len(checkpoints))
    # the numbers as a file too: downloadable from the UI, and kfp.local's cache needs a file per artifact
    Path(metrics.path).write_text(json.dumps(metrics.metadata, indent=2, sort_keys=True), encoding="utf-8")

    body = [f"<h2>LoRA training: {html.escape(lora_config)}</h2>"]
    if (out / "loss.png").is_file():
        png = base64.b64encode((out / "loss.png").read_bytes()).decode("ascii")
        body.append(f'<img alt="loss curves" src="data:image/png;base64,{png}" style="max-width:100%">')
    else:
        body.append("<p>No loss.png was written.</p>")
    if (out / "metrics.csv").is_file():
        rows = (out / "metrics.csv").read_text(encoding="utf-8").strip().splitlines()
        cells = [r.split(",") for r in rows[:1] + rows[1:][-20:]]
        table = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells
        )
        body.append(f"<h3>metrics.csv (last {len(cells) - 1} rows)</h3><table border=1>{table}</table>")
    Path(loss_plot.path).write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>loss</title></head><body>"
        + "".join(body)
        + "</body></html>",
        encoding="utf-8",
    )
    lora.metadata.update(
        {
            "lora_config": lora_config,
            "checkpoints": [p.name for p in checkpoints],
            "accelerator": f"{gpu_count} x {gpu_type}",
            "checkpoint_folder": remote or str(results),
        }
    )
