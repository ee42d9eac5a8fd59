"""The compiled pipeline: DAG order, artifact types, GPU/platform settings, secrets, caching, images.

Compiles once, loads the YAML into the pipeline-spec and platform-spec protobuf messages, and checks
them. Secrets are checked by planting sentinel values in the environment before compiling.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from google.protobuf import json_format

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SENTINELS = {
    "HF_TOKEN": "hf_SENTINEL_do_not_leak_1",
    "AWS_ACCESS_KEY_ID": "AKIA_SENTINEL_do_not_leak_2",
    "AWS_SECRET_ACCESS_KEY": "SECRET_SENTINEL_do_not_leak_3",
    "S3_ENDPOINT_URL": "http://sentinel-do-not-leak-4:9000",
    "GOOGLE_APPLICATION_CREDENTIALS": "/sentinel/do-not-leak-5.json",
}
GPU_STEPS = ("extract-vq", "lora-train", "evaluate")
# merge-lora needs memory, not a GPU (pipeline.MERGE_MEMORY); --merge-on-gpu moves it (test below)
CPU_STEPS = (
    "merge-lora",
    "fetch-weights",
    "content-hash",
    "fetch-data",
    "validate",
    "normalize",
    "build-dataset",
    "publish",
)
STORAGE_STEPS = ("fetch-weights", "content-hash", "fetch-data", "publish", "lora-train")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    import pipeline

    mp = pytest.MonkeyPatch()
    for key, value in SENTINELS.items():
        mp.setenv(key, value)
    try:
        path = pipeline.compile_pipeline(tmp_path_factory.mktemp("compile") / "p.yaml")
    finally:
        mp.undo()
    text = path.read_text(encoding="utf-8")
    docs = list(yaml.safe_load_all(text))
    assert len(docs) == 2, "expected the pipeline spec and the platform spec"
    from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = json_format.ParseDict(docs[0], pipeline_spec_pb2.PipelineSpec())
    platform = json_format.ParseDict(docs[1], pipeline_spec_pb2.PlatformSpec())
    executors = json_format.MessageToDict(platform.platforms["kubernetes"].deployment_spec)["executors"]
    k8s_configs = {
        name.removeprefix("exec-"): json_format.ParseDict(cfg, k8s.KubernetesExecutorConfig())
        for name, cfg in executors.items()
    }
    containers = {
        name.removeprefix("exec-"): e["container"]
        for name, e in docs[0]["deploymentSpec"]["executors"].items()
    }
    return {"text": text, "docs": docs, "spec": spec, "k8s": k8s_configs, "containers": containers}


def _all_tasks(spec) -> dict:
    """Every task of every DAG, by task name (names are unique across the pipeline)."""
    tasks = dict(spec.root.dag.tasks)
    for comp in spec.components.values():
        if comp.HasField("dag"):
            tasks.update(comp.dag.tasks)
    return tasks


def _dag(spec, task_name: str) -> dict:
    """The tasks of the sub-DAG (condition, loop) that task `task_name` runs."""
    return dict(spec.components[f"comp-{task_name}"].dag.tasks)


def _upstream(spec, name: str) -> set[str]:
    """Tasks `name` depends on, through DAG groups resolved to their tasks."""
    tasks = _all_tasks(spec)
    out = set()
    for dep in tasks[name].dependent_tasks:
        out.add(dep)
    return out


def _train_branches(spec) -> str:
    """The task holding the two lora-train branches."""
    return next(
        n
        for n, t in _all_tasks(spec).items()
        if n.startswith("condition-branches-")
        and {"lora-train", "lora-train-2"}
        <= {
            task
            for cond in spec.components[t.component_ref.name].dag.tasks.values()
            for task in spec.components[cond.component_ref.name].dag.tasks
        }
    )


def test_train_nodes_choose_one_pod_or_a_trainjob(compiled):
    """train_nodes 1: lora-train on the GPU pool; more: lora-train-2, a light pod that runs a TrainJob."""
    spec = compiled["spec"]
    params = spec.root.input_definitions.parameters
    assert params["train_nodes"].default_value.number_value == 1
    assert params["trainer_runtime"].default_value.string_value == "torch-distributed"
    branches = spec.components[_all_tasks(spec)[_train_branches(spec)].component_ref.name].dag.tasks
    by_task = {
        task: cond.trigger_policy.condition
        for cond in branches.values()
        for task in spec.components[cond.component_ref.name].dag.tasks
    }
    assert by_task["lora-train"] == "int(inputs.parameter_values['pipelinechannel--train_nodes']) <= 1"
    assert by_task["lora-train-2"] == "!(int(inputs.parameter_values['pipelinechannel--train_nodes']) <= 1)"
    # the TrainJob launcher holds no GPU; the TrainJob gets the GPU settings, PVC and runtime as inputs
    assert "accelerator" not in compiled["containers"]["lora-train-2"].get("resources", {})
    cfg = compiled["k8s"]["lora-train-2"]
    assert not cfg.tolerations and cfg.pvc_mount and cfg.secret_as_env
    tasks = _all_tasks(spec)
    inputs = tasks["lora-train-2"].inputs.parameters
    for name in ("train_nodes", "trainer_runtime", "gpu_node_selector", "gpu_tolerations", "workspace_pvc"):
        assert inputs[name].component_input_parameter == f"pipelinechannel--{name}", name
    assert (
        inputs["trainjob_image"].runtime_value.constant.string_value
        == compiled["containers"]["lora-train"]["image"]
    )
    assert tasks["lora-train-2"].retry_policy.max_retry_count == 3
    # merge-lora takes whichever branch ran
    lora = tasks["merge-lora"].inputs.artifacts["lora"].task_output_artifact
    assert lora.producer_task == _train_branches(spec)


def test_dag_follows_the_recipe(compiled):
    spec = compiled["spec"]
    tasks = _all_tasks(spec)
    for step in (
        "fetch-weights",
        "validate",
        "normalize",
        "extract-vq",
        "build-dataset",
        "lora-train",
        "merge-lora",
    ):
        assert step in tasks, f"step {step} missing from the compiled pipeline"
    # lora-train runs in one of two branches (one pod, or a TrainJob of train_nodes nodes)
    branches = _train_branches(spec)
    # "publish requested": the condition holding the if/else of evaluate's publish gate
    publish_if = next(
        n
        for n in tasks
        if n.startswith("condition-")
        and not n.startswith("condition-branches")
        and any(
            "publish-skipped" in _dag(spec, c)
            for b in _dag(spec, n)
            if b.startswith("condition-branches")
            for c in _dag(spec, b)
        )
    )
    expected = {
        "fetch-data": {"content-hash"},
        "validate": {"content-hash", "fetch-data"},
        "normalize": {"content-hash", "fetch-data", "validate"},
        "build-dataset": {"content-hash", "normalize", "for-loop-2"},
        branches: {"content-hash", "build-dataset", "fetch-weights"},
        "evaluate": {"fetch-weights", branches, "normalize", "for-loop-2"},
        "merge-lora": {"fetch-weights", branches, "evaluate"},
        publish_if: {"merge-lora", "evaluate"},
    }
    for step, ups in expected.items():
        assert _upstream(spec, step) == ups, step
    loop = tasks["for-loop-2"]
    assert loop.parameter_iterator.items.input_parameter == "pipelinechannel--plan-shards-Output"
    assert {"normalize", "fetch-weights", "plan-shards"} <= set(loop.dependent_tasks)
    assert "extract-vq" in spec.components["comp-for-loop-2"].dag.tasks
    # build-dataset collects every shard's codes
    codes = tasks["build-dataset"].inputs.artifacts["codes"]
    assert codes.task_output_artifact.producer_task == "for-loop-2"
    assert spec.components["comp-build-dataset"].input_definitions.artifacts["codes"].is_artifact_list
    # the condition runs publish; the exit handler wraps everything and runs report-status
    # merge-lora merges evaluate's choice
    ckpt = tasks["merge-lora"].inputs.parameters["checkpoint"].task_output_parameter
    assert (ckpt.producer_task, ckpt.output_parameter_key) == ("evaluate", "checkpoint")
    # publish runs only when requested and when evaluate's gate says so; else publish-skipped says why
    (gate_branches,) = _dag(spec, publish_if)  # if/else of the gate inside "publish requested"
    gate = _dag(spec, gate_branches)
    publish = [n for n in gate if "publish" in _dag(spec, n)]
    refused = [n for n in gate if "publish-skipped" in _dag(spec, n)]
    assert len(publish) == len(refused) == 1
    condition = gate[publish[0]].trigger_policy.condition
    assert condition == "inputs.parameter_values['pipelinechannel--evaluate-publish'] == 'true'"
    assert gate[refused[0]].trigger_policy.condition == f"!({condition})"
    reason = _dag(spec, refused[0])["publish-skipped"].inputs.parameters["reason"]
    assert reason.component_input_parameter == "pipelinechannel--evaluate-publish_reason"
    root = spec.root.dag.tasks
    assert set(root) == {"exit-handler-1", "report-status"}
    assert (
        root["report-status"].trigger_policy.strategy
        == root["report-status"].trigger_policy.ALL_UPSTREAM_TASKS_COMPLETED
    )
    assert (
        root["report-status"].inputs.parameters["status"].task_final_status.producer_task == "exit-handler-1"
    )


def test_artifact_types(compiled):
    comps = compiled["spec"].components
    expected = {
        "fetch-weights": {"model": "system.Model"},
        "fetch-data": {"data": "system.Dataset"},
        "validate": {"report": "system.Markdown", "metrics": "system.Metrics"},
        "normalize": {"normalized": "system.Dataset", "metrics": "system.Metrics"},
        "extract-vq": {"codes": "system.Dataset", "metrics": "system.Metrics"},
        "build-dataset": {"protos": "system.Dataset", "metrics": "system.Metrics"},
        "lora-train": {"lora": "system.Model", "metrics": "system.Metrics", "loss_plot": "system.HTML"},
        "merge-lora": {"merged": "system.Model"},
        "evaluate": {"report": "system.HTML", "metrics": "system.Metrics", "results": "system.Artifact"},
        "report-status": {"report": "system.Markdown"},
    }
    for step, outputs in expected.items():
        defs = comps[f"comp-{step}"].output_definitions.artifacts
        assert {k: v.artifact_type.schema_title for k, v in defs.items()} == outputs, step
    inputs = {
        "extract-vq": {"data": "system.Dataset", "weights": "system.Model"},
        "lora-train": {"protos": "system.Dataset", "base_model": "system.Model"},
        "merge-lora": {"base_model": "system.Model", "lora": "system.Model"},
        "evaluate": {
            "base_model": "system.Model",
            "lora": "system.Model",
            "data": "system.Dataset",
            "codes": "system.Dataset",
        },
    }
    for step, ins in inputs.items():
        defs = comps[f"comp-{step}"].input_definitions.artifacts
        assert {k: v.artifact_type.schema_title for k, v in defs.items()} == ins, step


def test_parameters(compiled):
    params = compiled["spec"].root.input_definitions.parameters
    for name in (
        "data_source",
        "base_model",
        "base_revision",
        "lora_config",
        "max_steps",
        "batch_size",
        "accumulate_grad_batches",
        "learning_rate",
        "val_fraction",
        "checkpoint",
        "accelerator_type",
        "accelerator_count",
        "gpu_node_selector",
        "gpu_tolerations",
        "num_vq_shards",
        "publish_destination",
        "checkpoint_root",
        "workspace_pvc",
    ):
        assert name in params, name
    from kfp.pipeline_spec.pipeline_spec_pb2 import ParameterType

    assert params["gpu_node_selector"].parameter_type == ParameterType.STRUCT
    assert params["gpu_tolerations"].parameter_type == ParameterType.LIST
    assert params["max_steps"].default_value.number_value == 1000
    assert params["checkpoint"].default_value.string_value == "auto"
    assert params["publish_policy"].default_value.string_value == "if_better"
    from fish_speech.evaluate.models import DEFAULT_ASR, DEFAULT_SPEAKER_MODEL

    assert params["asr_model"].default_value.string_value == DEFAULT_ASR
    assert params["speaker_model"].default_value.string_value == DEFAULT_SPEAKER_MODEL


def test_gpu_steps_platform_settings(compiled):
    for step in GPU_STEPS:
        resources = compiled["containers"][step]["resources"]["accelerator"]
        assert resources["resourceType"] == "{{$.inputs.parameters['pipelinechannel--accelerator_type']}}"
        assert resources["resourceCount"] == "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
        cfg = compiled["k8s"][step]
        assert (
            cfg.node_selector.node_selector_json.component_input_parameter
            == "pipelinechannel--gpu_node_selector"
        )
        assert [t.toleration_json.component_input_parameter for t in cfg.tolerations] == [
            "pipelinechannel--gpu_tolerations"
        ]
        shm = [m for m in cfg.empty_dir_mounts if m.mount_path == "/dev/shm"]
        assert len(shm) == 1 and shm[0].medium == "Memory"
    for step in CPU_STEPS:
        assert "accelerator" not in compiled["containers"][step].get("resources", {}), step
        cfg = compiled["k8s"].get(step)
        assert cfg is None or not cfg.tolerations, step


def test_channels_reach_the_nested_dags(compiled):
    """Every `{{$.inputs.parameters[...]}}` a task uses is an input of the DAG that holds it.

    (KFP's compiler does not add a channel used only in set_accelerator_* to a nested DAG's inputs,
    which breaks the run; the components take the accelerator settings as inputs to avoid that.)
    """
    spec = compiled["spec"]
    for comp_name, comp in spec.components.items():
        if not comp.HasField("dag"):
            continue
        available = set(comp.input_definitions.parameters)
        for task_name, task in comp.dag.tasks.items():
            for pname, param in task.inputs.parameters.items():
                if param.HasField("component_input_parameter"):
                    assert param.component_input_parameter in available, (comp_name, task_name, pname)
            # the Kubernetes settings read parameters of the same DAG (node selector, tolerations, PVC)
            executor = spec.components[task.component_ref.name].executor_label
            cfg = compiled["k8s"].get(executor.removeprefix("exec-"))
            if cfg is None:
                continue
            used = [cfg.node_selector.node_selector_json.component_input_parameter]
            used += [t.toleration_json.component_input_parameter for t in cfg.tolerations]
            used += [m.pvc_name_parameter.component_input_parameter for m in cfg.pvc_mount]
            for name in filter(None, used):
                assert name in available, (comp_name, task_name, name)


def test_secrets_by_reference_only(compiled):
    import pipeline

    text = compiled["text"]
    for value in SENTINELS.values():
        assert value not in text
    for step in STORAGE_STEPS:
        cfg = compiled["k8s"][step]
        names = {s.secret_name_parameter.runtime_value.constant.string_value for s in cfg.secret_as_env}
        assert names == set(pipeline.SECRET_ENV), step
        for s in cfg.secret_as_env:
            assert s.optional
            assert {m.env_var for m in s.key_to_env} == set(pipeline.SECRET_ENV[s.secret_name])
        vols = [v.secret_name_parameter.runtime_value.constant.string_value for v in cfg.secret_as_volume]
        assert vols == [pipeline.GCS_SECRET]
        env = {e["name"]: e["value"] for e in compiled["containers"][step].get("env", [])}
        assert env == {"GOOGLE_APPLICATION_CREDENTIALS": f"{pipeline.GCS_MOUNT}/{pipeline.GCS_KEY_FILE}"}
    for step in ("validate", "normalize", "build-dataset", "extract-vq", "merge-lora", "report-status"):
        cfg = compiled["k8s"].get(step)
        assert cfg is None or not (cfg.secret_as_env or cfg.secret_as_volume), step


def test_checkpoints_on_the_workspace_pvc_and_retries(compiled):
    import pipeline

    cfg = compiled["k8s"]["lora-train"]
    mounts = {m.mount_path: m.pvc_name_parameter.component_input_parameter for m in cfg.pvc_mount}
    assert mounts == {pipeline.WORKSPACE_MOUNT: "pipelinechannel--workspace_pvc"}
    params = compiled["spec"].root.input_definitions.parameters
    assert params["checkpoint_root"].default_value.string_value.startswith(pipeline.WORKSPACE_MOUNT + "/")
    tasks = _all_tasks(compiled["spec"])
    for step in GPU_STEPS:
        policy = tasks[step].retry_policy
        assert policy.max_retry_count == 3 and policy.backoff_factor == 2.0, step
        assert policy.backoff_duration.seconds == 60
    for step in ("content-hash", "fetch-data", "fetch-weights"):
        assert tasks[step].retry_policy.max_retry_count >= 1, step


def test_caching_keyed_on_content(compiled):
    tasks = _all_tasks(compiled["spec"])
    assert not tasks["content-hash"].caching_options.enable_cache
    assert not tasks["publish"].caching_options.enable_cache
    assert not compiled["spec"].root.dag.tasks["report-status"].caching_options.enable_cache
    for step in ("fetch-data", "validate", "normalize", "build-dataset"):
        task = tasks[step]
        assert task.caching_options.enable_cache, step
        param = task.inputs.parameters["content_hash"]
        assert param.task_output_parameter.producer_task == "content-hash", step
    # lora-train (both branches) gets it through the branches task
    branches = tasks[_train_branches(compiled["spec"])]
    assert (
        branches.inputs.parameters["pipelinechannel--content-hash-Output"].task_output_parameter.producer_task
        == "content-hash"
    )
    for step in ("lora-train", "lora-train-2"):
        assert tasks[step].caching_options.enable_cache, step
        assert (
            tasks[step].inputs.parameters["content_hash"].component_input_parameter
            == "pipelinechannel--content-hash-Output"
        )
    # inside the loop the hash arrives as a loop input that the loop task takes from content-hash
    inner = tasks["extract-vq"].inputs.parameters["content_hash"].component_input_parameter
    outer = tasks["for-loop-2"].inputs.parameters[inner]
    assert outer.task_output_parameter.producer_task == "content-hash"
    assert tasks["extract-vq"].caching_options.enable_cache
    # fetch-data has no input artifact: its cache key is (source, hash) only
    assert not tasks["fetch-data"].inputs.artifacts


def test_images_and_no_runtime_installs(compiled):
    import components

    for step, container in compiled["containers"].items():
        # lora-train-2 (the TrainJob launcher) is the same component, hence the same image
        expected = components.GPU_IMAGE if step in (*GPU_STEPS, "lora-train-2") else components.CPU_IMAGE
        assert container["image"] == expected, step
        assert "pip install" not in json.dumps(container), step


def test_image_ref_pins_recorded_digest(tmp_path, monkeypatch):
    from components import images

    config = json.loads(images.IMAGES_JSON.read_text())
    config["digests"] = {f"reg.example/team/{config['images']['gpu']['name']}:v2": "sha256:" + "a" * 64}
    path = tmp_path / "images.json"
    path.write_text(json.dumps(config))
    monkeypatch.setattr(images, "IMAGES_JSON", path)
    monkeypatch.delenv("IMAGE_REGISTRY", raising=False)
    monkeypatch.delenv("IMAGE_TAG", raising=False)
    gpu = config["images"]["gpu"]["name"]
    assert images.image_ref("gpu", "reg.example/team", "v2") == f"reg.example/team/{gpu}:v2@sha256:{'a' * 64}"
    assert images.image_ref("cpu", "reg.example/team", "v2").endswith(":v2")
    monkeypatch.setenv("IMAGE_REGISTRY", "other.example")
    monkeypatch.setenv("IMAGE_TAG", "t9")
    assert images.image_ref("cpu") == f"other.example/{config['images']['cpu']['name']}:t9"
    with pytest.raises(KeyError, match="tpu"):
        images.image_ref("tpu")


def test_parse_params():
    import pipeline_cli

    got = pipeline_cli.parse_params(
        [
            "max_steps=7",
            "learning_rate=2e-4",
            'gpu_node_selector={"pool": "a100"}',
            "data_source=s3://b/clips",
        ]
    )
    assert got == {
        "max_steps": 7,
        "learning_rate": 2e-4,
        "gpu_node_selector": {"pool": "a100"},
        "data_source": "s3://b/clips",
    }
    with pytest.raises(SystemExit, match="unknown parameter"):
        pipeline_cli.parse_params(["nope=1"])
    with pytest.raises(SystemExit, match="max_steps"):
        pipeline_cli.parse_params(["max_steps=many"])
    with pytest.raises(SystemExit, match="gpu_tolerations"):
        pipeline_cli.parse_params(['gpu_tolerations={"not": "a list"}'])
    with pytest.raises(SystemExit, match="NAME=VALUE"):
        pipeline_cli.parse_params(["max_steps"])


def test_compile_command(tmp_path):
    out = tmp_path / "sub" / "pipeline.yaml"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "pipeline.py"),
            "--compile",
            "--output",
            str(out),
            "--registry",
            "r.example/x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    spec = yaml.safe_load_all(out.read_text())
    images = {e["container"]["image"] for e in next(spec)["deploymentSpec"]["executors"].values()}
    assert images and all(i.startswith("r.example/x/fish-speech-kfp-") for i in images)
    assert not list(out.parent.glob(".tmp-*"))


def test_merge_on_the_cpu_pool_unless_asked(compiled, tmp_path):
    """merge-lora needs memory, not a GPU: CPU pool with a memory request; --merge-on-gpu moves it."""
    import pipeline

    resources = compiled["containers"]["merge-lora"]["resources"]
    assert "accelerator" not in resources
    assert resources["resourceMemoryRequest"] == pipeline.MERGE_MEMORY
    path = pipeline.compile_pipeline(tmp_path / "gpu.yaml", merge_on_gpu=True)
    spec = next(yaml.safe_load_all(path.read_text()))
    merge = spec["deploymentSpec"]["executors"]["exec-merge-lora"]["container"]
    assert merge["resources"]["accelerator"]["resourceCount"] == (
        "{{$.inputs.parameters['pipelinechannel--accelerator_count']}}"
    )


def test_pipeline_defaults_are_the_steps_defaults(compiled):
    """Each default is read from its declaration; only max_steps differs, on purpose."""
    import pipeline
    from fish_speech.options import option_defaults
    from fish_speech.text2semantic.options import TrainOptions

    params = compiled["spec"].root.input_definitions.parameters
    train = option_defaults(TrainOptions)
    for name in (
        "lora_config",
        "batch_size",
        "accumulate_grad_batches",
        "learning_rate",
        "val_fraction",
        "save_every",
    ):
        value = params[name].default_value
        assert (value.string_value or value.number_value) == train[name], name
    assert train["max_steps"] != pipeline.PIPELINE_MAX_STEPS == params["max_steps"].default_value.number_value
