"""manifests/base: render the kustomize base and validate every resource against the Kubernetes schemas.

There is no kustomize binary here, so `render` applies the subset of kustomize the base uses
(resources, namespace, labels) and refuses any other field, so the base cannot silently outgrow it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "manifests" / "base"
K8S_VERSION = "1.31.0"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass"}
SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources"}
sys.path.insert(0, str(REPO))


def render(base: Path) -> list[dict]:
    """The objects `kustomize build base` would emit, for the fields the base uses."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED
    assert not unsupported, f"extend render() for {sorted(unsupported)}"
    objects = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((base / resource).read_text()):
            if doc is None:
                continue
            meta = doc.setdefault("metadata", {})
            if "namespace" in kustomization and doc["kind"] not in CLUSTER_SCOPED:
                meta["namespace"] = kustomization["namespace"]
            for group in kustomization.get("labels", []):
                meta.setdefault("labels", {}).update(group["pairs"])
            objects.append(doc)
    return objects


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(BASE)


def test_every_resource_is_valid(objects):
    import kubernetes_validate

    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_typo(objects):
    import kubernetes_validate

    pvc = next(o for o in objects if o["kind"] == "PersistentVolumeClaim")
    broken = {**pvc, "spec": {**pvc["spec"], "accesMode": ["ReadWriteOnce"]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


def test_names_match_the_pipeline(objects):
    import pipeline

    by_kind: dict[str, set[str]] = {}
    for obj in objects:
        by_kind.setdefault(obj["kind"], set()).add(obj["metadata"]["name"])
    assert by_kind["Secret"] == {pipeline.HF_SECRET, pipeline.S3_SECRET, pipeline.GCS_SECRET}
    assert pipeline.WORKSPACE_PVC in by_kind["PersistentVolumeClaim"]
    assert by_kind["ServiceAccount"] == {"fish-speech-pipeline"}
    binding = next(o for o in objects if o["kind"] == "RoleBinding")
    assert binding["roleRef"]["name"] in by_kind["Role"]
    assert binding["subjects"][0]["name"] == "fish-speech-pipeline"
    assert all(o["metadata"]["namespace"] == "kubeflow" for o in objects)


def test_secret_templates_hold_no_values(objects):
    for obj in objects:
        if obj["kind"] == "Secret":
            assert not obj.get("data") and not obj.get("stringData"), obj["metadata"]["name"]
