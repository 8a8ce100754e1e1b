"""infra/ stays deployable: every YAML parses, every Kubernetes object has what its kind needs, and
the files agree with each other and with the code they run (modules, CLI flags, job specs, pins).

No cluster, Docker or Airflow is needed: the checks read the files, and use Ray's own validator
for the cluster launcher config and diffgen's own parsers for commands and job specs.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# Objects the manifests use but do not define: created by hand, so infra/README.md must name them
# (except the token Secret KubeRay makes for a RayCluster with token auth: `_kuberay_token_secret`).
HAND_MADE = {"Secret", "PersistentVolumeClaim"}

# Required field paths per kind. `a|b`: either will do; `[*]`: every item of a list (at least one).
COMMON = ["apiVersion", "kind", "metadata.name"]
REQUIRED: dict[str, list[str]] = {
    "RayCluster": [
        "spec.rayVersion",
        "spec.headGroupSpec.rayStartParams",
        "spec.headGroupSpec.template.spec.containers",
        "spec.workerGroupSpecs[*].groupName",
        "spec.workerGroupSpecs[*].minReplicas",
        "spec.workerGroupSpecs[*].maxReplicas",
        "spec.workerGroupSpecs[*].rayStartParams",
        "spec.workerGroupSpecs[*].template.spec.containers",
    ],
    "RayJob": ["spec.entrypoint", "spec.rayClusterSpec|spec.clusterSelector"],
    "CronJob": [
        "spec.schedule",
        "spec.jobTemplate.spec.template.spec.containers",
        "spec.jobTemplate.spec.template.spec.restartPolicy",
    ],
    "ServiceAccount": [],
    "Role": ["rules[*].apiGroups", "rules[*].resources", "rules[*].verbs"],
    "RoleBinding": ["roleRef.apiGroup", "roleRef.kind", "roleRef.name", "subjects[*].kind", "subjects[*].name"],
    "ConfigMap": ["data"],
    "Secret": ["data|stringData"],
}
API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "CronJob": "batch/v1",
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
    "ConfigMap": "v1",
    "Secret": "v1",
}
# What each kubectl subcommand needs from RBAC.
KUBECTL_VERBS = {
    "create": {"create"},
    "get": {"get", "list"},
    "delete": {"delete"},
    "apply": {"get", "create", "patch"},
    "patch": {"patch"},
    "wait": {"get", "list", "watch"},
}
EXPECTED_FILES = (
    "Dockerfile",
    "README.md",
    "ray-cluster-aws.yaml",
    "minio/docker-compose.yaml",
    "kuberay/raycluster.yaml",
    "kuberay/rayjob.yaml",
    "kuberay/cronjob.yaml",
    "airflow/diffgen_dag.py",
)
# Paths that must stay out of the Docker build context.
LEFT_OUT_OF_THE_IMAGE = (
    ".venv/bin/python",
    ".git/HEAD",
    "out/default/run.json",
    "examples/models/tiny-sd/model_index.json",
    "tests/conftest.py",
    "diffgen/__pycache__/storage.cpython-311.pyc",
)
PLACEHOLDER = re.compile(r"@([A-Z_]+)@")
GPU = "nvidia.com/gpu"


# ---------------------------------------------------------------------------------------- loading


def _yaml_files() -> list[Path]:
    return sorted(p for p in INFRA.rglob("*") if p.suffix in (".yaml", ".yml"))


def _load(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _parseable() -> dict[Path, list[Any]]:
    """Every YAML file that parses; the ones that do not fail test_every_yaml_parses."""
    docs = {}
    for path in _yaml_files():
        try:
            docs[path] = _load(path)
        except yaml.YAMLError:
            pass
    return docs


def _is_k8s(doc: Any) -> bool:
    return isinstance(doc, dict) and "apiVersion" in doc and "kind" in doc


def _render(template: str) -> str:
    """A template as the CronJob's script fills it in (a date for @DATE@, a word for the rest)."""
    return PLACEHOLDER.sub(lambda m: "2026-03-04" if m.group(1) == "DATE" else "x", template)


def _templates(obj: dict) -> list[tuple[str, dict]]:
    """Kubernetes objects held as YAML text in a ConfigMap (created later, e.g. by a CronJob)."""
    found = []
    for key, text in (obj.get("data") or {}).items():
        if not key.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(_render(text)):
            if _is_k8s(doc):
                found.append((key, doc))
    return found


def _objects() -> list[tuple[str, dict, bool]]:
    """(label, object, is_template) for every Kubernetes object under infra/, templates included."""
    found = []
    for path, docs in _parseable().items():
        rel = path.relative_to(ROOT)
        for doc in docs:
            if not _is_k8s(doc):
                continue
            name = (doc.get("metadata") or {}).get("name")
            found.append((f"{rel}:{doc['kind']}/{name}", doc, False))
            if doc["kind"] == "ConfigMap":
                for key, inner in _templates(doc):
                    inner_name = inner.get("metadata", {}).get("generateName") or inner.get("metadata", {}).get("name")
                    found.append((f"{rel}:ConfigMap/{name}[{key}]:{inner['kind']}/{inner_name}", inner, True))
    return found


OBJECTS = _objects()
IDS = [label for label, _, _ in OBJECTS]


def _of_kind(kind: str) -> list[tuple[str, dict, bool]]:
    return [(label, obj, tmpl) for label, obj, tmpl in OBJECTS if obj["kind"] == kind]


def _defined(kind: str) -> dict[str, dict]:
    return {obj["metadata"]["name"]: obj for _, obj, tmpl in _of_kind(kind) if not tmpl}


def _kuberay_token_secret(cluster: dict) -> tuple[str, bool] | None:
    """(Secret name, made by KubeRay) holding the Ray auth token (key auth_token) of a RayCluster with token
    auth: KubeRay makes one named after the cluster unless authOptions.secretName names one made by hand."""
    auth = cluster["spec"].get("authOptions") or {}
    if auth.get("mode") != "token":
        return None
    return (auth["secretName"], False) if auth.get("secretName") else (cluster["metadata"]["name"], True)


# ----------------------------------------------------------------------------------- field paths


def _values(node: Any, parts: list[str]) -> list[Any] | None:
    """The values at a dotted path (a list for `[*]`); None when a step is missing or empty."""
    if not parts:  # an empty list or string is as good as missing; an empty mapping ({}) is a value
        return None if node in ("", []) else [node]
    head, rest = parts[0], parts[1:]
    if head.endswith("[*]"):
        items = node.get(head[:-3]) if isinstance(node, dict) else None
        if not isinstance(items, list) or not items:
            return None
        out = []
        for item in items:
            got = _values(item, rest)
            if got is None:
                return None
            out.extend(got)
        return out
    if not isinstance(node, dict) or node.get(head) is None:
        return None
    return _values(node[head], rest)


def _missing(obj: dict, paths: list[str]) -> list[str]:
    return [p for p in paths if all(_values(obj, alt.split(".")) is None for alt in p.split("|"))]


# --------------------------------------------------------------------------------- pod templates


def _pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(role, pod spec) of every pod an object creates: Ray head/workers, CronJob pods."""
    spec = obj.get("spec") or {}
    kind = obj["kind"]
    if kind == "RayJob":  # with a clusterSelector it creates no pods
        spec = spec.get("rayClusterSpec") or {}
        kind = "RayCluster" if spec else kind
    if kind == "RayCluster":
        pods = [("head", spec.get("headGroupSpec", {}).get("template", {}).get("spec", {}))]
        for group in spec.get("workerGroupSpecs") or []:
            pods.append((f"worker:{group.get('groupName')}", group.get("template", {}).get("spec", {})))
        return pods
    if kind == "CronJob":
        return [("job", spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {}))]
    return []


def _containers(pod: dict) -> list[dict]:
    return list(pod.get("initContainers") or []) + list(pod.get("containers") or [])


def _ray_clusters() -> list[tuple[str, dict]]:
    """(label, RayCluster spec) for standing clusters and the inline clusters of RayJobs."""
    specs = [(label, obj["spec"]) for label, obj, _ in _of_kind("RayCluster")]
    for label, obj, _ in _of_kind("RayJob"):
        if "rayClusterSpec" in obj.get("spec", {}):
            specs.append((label, obj["spec"]["rayClusterSpec"]))
    return specs


def _gpus(container: dict) -> int:
    return int((container.get("resources") or {}).get("limits", {}).get(GPU, 0))


def _diffgen_image() -> str:
    return f"registry.example.com/diffgen:{PYPROJECT['project']['version']}"


def _ray_pin() -> str:
    pins = [d for d in PYPROJECT["project"]["dependencies"] if re.match(r"ray(\[.*\])?==", d)]
    assert pins, "pyproject.toml pins no ray version"
    return pins[0].split("==")[1]


# ------------------------------------------------------------------------------------ every YAML


@pytest.mark.parametrize("path", _yaml_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses(path: Path) -> None:
    docs = _load(path)
    assert docs, f"{path}: no YAML document"


def test_infra_has_the_expected_files() -> None:
    for rel in EXPECTED_FILES:
        assert (INFRA / rel).is_file(), f"infra/{rel} is missing"
    kinds = {obj["kind"] for _, obj, _ in OBJECTS}
    assert {"RayCluster", "RayJob", "CronJob", "Role", "RoleBinding", "ServiceAccount", "ConfigMap"} <= kinds


# -------------------------------------------------------------------------------- Kubernetes kinds


@pytest.mark.parametrize("label,obj,is_template", OBJECTS, ids=IDS)
def test_object_has_the_fields_of_its_kind(label: str, obj: dict, is_template: bool) -> None:
    kind = obj["kind"]
    assert kind in REQUIRED, f"{label}: no required-field table for kind {kind}; add one to REQUIRED"
    assert obj["apiVersion"] == API_VERSIONS[kind], (
        f"{label}: apiVersion {obj['apiVersion']}, want {API_VERSIONS[kind]}"
    )
    # kubectl apply needs a name; a template for `kubectl create` may use generateName.
    common = [p.replace("metadata.name", "metadata.name|metadata.generateName") if is_template else p for p in COMMON]
    missing = _missing(obj, common + REQUIRED[kind])
    if kind == "RayJob" and "rayClusterSpec" in obj.get("spec", {}):
        missing += _missing({"spec": obj["spec"]["rayClusterSpec"]}, REQUIRED["RayCluster"])
    assert not missing, f"{label}: missing {', '.join(missing)}"


@pytest.mark.parametrize("label,obj,is_template", OBJECTS, ids=IDS)
def test_containers_have_a_name_and_a_pinned_image(label: str, obj: dict, is_template: bool) -> None:
    for role, pod in _pod_specs(obj):
        assert pod.get("containers"), f"{label} {role}: no containers"
        for c in _containers(pod):
            assert c.get("name") and c.get("image"), f"{label} {role}: a container without name or image: {c}"
            tag = c["image"].rsplit("/", 1)[-1].partition(":")[2]
            assert tag and tag != "latest", f"{label} {role}: image {c['image']} is not pinned to a tag"


@pytest.mark.parametrize("label,spec", _ray_clusters(), ids=[label for label, _ in _ray_clusters()])
def test_ray_cluster_is_a_cpu_head_with_autoscaling_gpu_workers(label: str, spec: dict) -> None:
    assert spec.get("enableInTreeAutoscaling") is True, f"{label}: enableInTreeAutoscaling must be true"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert _gpus(head) == 0, f"{label}: the head asks for a GPU; it should be a CPU pod"
    gpu_groups = 0
    for group in spec["workerGroupSpecs"]:
        name, low, high = group["groupName"], group["minReplicas"], group["maxReplicas"]
        assert 0 <= low <= high and high >= 1, f"{label} {name}: minReplicas {low}, maxReplicas {high}"
        assert low <= group.get("replicas", low) <= high, f"{label} {name}: replicas outside [min, max]"
        ray = group["template"]["spec"]["containers"][0]
        requests = (ray.get("resources") or {}).get("requests", {})
        if GPU in requests:
            limit = ray["resources"].get("limits", {}).get(GPU)
            assert str(requests[GPU]) == str(limit), f"{label} {name}: {GPU} requests and limits differ"
        if _gpus(ray):
            gpu_groups += 1
            assert low == 0, f"{label} {name}: a GPU group should scale to zero (minReplicas 0)"
    assert gpu_groups, f"{label}: no worker group has {GPU} in its limits"


@pytest.mark.parametrize("label,spec", _ray_clusters(), ids=[label for label, _ in _ray_clusters()])
def test_ray_cluster_runs_the_diffgen_image_and_pinned_ray(label: str, spec: dict) -> None:
    assert spec["rayVersion"] == _ray_pin(), (
        f"{label}: rayVersion {spec['rayVersion']}, pyproject pins ray {_ray_pin()}"
    )
    assert spec.get("authOptions", {}).get("mode") == "token", f"{label}: Ray token auth (authOptions.mode) is off"
    pods = [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
    for pod in pods:
        ray = pod["containers"][0]
        assert ray["image"] == _diffgen_image(), f"{label}: {ray['name']} runs {ray['image']}, want {_diffgen_image()}"
        # The driver reads the manifest and writes run.json; the workers write images.
        secret_env = {e["name"] for e in ray.get("env") or [] if "secretKeyRef" in e.get("valueFrom", {})}
        for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            assert var in secret_env, f"{label}: {ray['name']} does not get {var} from a Secret"


@pytest.mark.parametrize("label,obj,is_template", _of_kind("RayJob"), ids=[x[0] for x in _of_kind("RayJob")])
def test_rayjob_options_are_ones_kuberay_accepts(label: str, obj: dict, is_template: bool) -> None:
    spec = obj["spec"]
    assert not ("rayClusterSpec" in spec and "clusterSelector" in spec), (
        f"{label}: both rayClusterSpec and clusterSelector"
    )
    if "clusterSelector" in spec:
        assert not spec.get("shutdownAfterJobFinishes"), f"{label}: cannot shut down a cluster it did not create"
        selected = spec["clusterSelector"].get("ray.io/cluster")
        assert selected in _defined("RayCluster"), f"{label}: clusterSelector names no RayCluster under infra/"
    if spec.get("ttlSecondsAfterFinished") is not None:
        assert spec.get("shutdownAfterJobFinishes") is True, (
            f"{label}: ttlSecondsAfterFinished needs shutdownAfterJobFinishes"
        )
    if "rayClusterSpec" in spec and not is_template:
        assert spec.get("shutdownAfterJobFinishes") is True, f"{label}: a one-off RayJob should delete its cluster"


@pytest.mark.parametrize("label,obj,is_template", OBJECTS, ids=IDS)
def test_referenced_objects_exist(label: str, obj: dict, is_template: bool) -> None:
    readme = (INFRA / "README.md").read_text()
    for role, pod in _pod_specs(obj):
        refs = []
        for volume in pod.get("volumes") or []:
            if "configMap" in volume:
                refs.append(("ConfigMap", volume["configMap"]["name"]))
            if "persistentVolumeClaim" in volume:
                refs.append(("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]))
        for c in _containers(pod):
            for e in c.get("env") or []:
                if "secretKeyRef" in e.get("valueFrom", {}):
                    refs.append(("Secret", e["valueFrom"]["secretKeyRef"]["name"]))
            mounts = {m["name"] for m in c.get("volumeMounts") or []}
            volumes = {v["name"] for v in pod.get("volumes") or []}
            assert mounts <= volumes, f"{label} {role}: {c['name']} mounts undefined volumes {mounts - volumes}"
        if "serviceAccountName" in pod:
            refs.append(("ServiceAccount", pod["serviceAccountName"]))
        kuberay_made = {s[0] for c in _defined("RayCluster").values() if (s := _kuberay_token_secret(c)) and s[1]}
        for kind, name in refs:
            if kind == "Secret" and name in kuberay_made:
                continue
            if kind in HAND_MADE:
                assert name in readme, (
                    f"{label} {role}: {kind} {name} is made by hand but infra/README.md never names it"
                )
            else:
                assert name in _defined(kind), f"{label} {role}: {kind} {name} is not defined under infra/"


# ----------------------------------------------------------------- entrypoints and their job specs


def _run_parser() -> argparse.ArgumentParser:
    from diffgen.jobs.cli import add_run_arguments

    parser = argparse.ArgumentParser(prog="python -m diffgen.jobs.generate", exit_on_error=False)
    add_run_arguments(parser)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str], where: str) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except (SystemExit, argparse.ArgumentError) as e:
        error = e  # argparse has printed why to stderr
    pytest.fail(f"{where}: the CLI rejects {shlex.join(argv)} ({error})")


def _head_of(label: str, rayjob: dict) -> dict:
    """The head pod that runs a RayJob's driver: its own cluster's, or the selected RayCluster's."""
    spec = rayjob["spec"]
    if "rayClusterSpec" in spec:
        return spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    name = spec["clusterSelector"]["ray.io/cluster"]
    assert name in _defined("RayCluster"), f"{label}: clusterSelector names no RayCluster under infra/"
    return _defined("RayCluster")[name]["spec"]["headGroupSpec"]["template"]["spec"]


def _cluster_of(rayjob: dict) -> dict:
    spec = rayjob["spec"]
    return spec.get("rayClusterSpec") or _defined("RayCluster")[spec["clusterSelector"]["ray.io/cluster"]]["spec"]


def _read_mounted(pod: dict, path: str, where: str) -> str:
    """The text of a file that a ConfigMap volume puts at `path` in the pod's first container."""
    for mount in pod["containers"][0].get("volumeMounts") or []:
        volume = next((v for v in pod.get("volumes") or [] if v["name"] == mount["name"]), {})
        if "configMap" not in volume or not PurePosixPath(path).is_relative_to(mount["mountPath"]):
            continue
        key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
        items = volume["configMap"].get("items")
        if items:  # only the listed keys are mounted, each at its own path
            key = next((i["key"] for i in items if i["path"] == key), None)
        data = _defined("ConfigMap").get(volume["configMap"]["name"], {}).get("data", {})
        assert key in data, f"{where}: {path} is not a key of ConfigMap {volume['configMap']['name']}"
        return data[key]
    pytest.fail(f"{where}: nothing mounts a ConfigMap at {path} in {pod['containers'][0]['name']}")


@pytest.mark.parametrize("label,obj,is_template", _of_kind("RayJob"), ids=[x[0] for x in _of_kind("RayJob")])
def test_rayjob_entrypoint_runs_a_job_spec_the_cluster_can_serve(label: str, obj: dict, is_template: bool) -> None:
    from diffgen.schemas.job import JobSpec

    argv = shlex.split(obj["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "diffgen.jobs.generate"], f"{label}: entrypoint {argv[:3]}"
    args = _parse(_run_parser(), argv[3:], label)
    assert args.manifest and args.output, f"{label}: the entrypoint should name --manifest and --output"

    head = _head_of(label, obj)
    spec = JobSpec.model_validate(yaml.safe_load(_read_mounted(head, args.job, label)))

    cluster = _cluster_of(obj)
    pods = [head] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]
    if spec.model.id.startswith("/"):  # a model folder: the driver and every worker must see it
        for pod in pods:
            ray = pod["containers"][0]
            mounts = [m["mountPath"] for m in ray.get("volumeMounts") or []]
            seen = any(PurePosixPath(spec.model.id).is_relative_to(m) for m in mounts)
            assert seen, f"{label}: model {spec.model.id} is not mounted in {ray['name']}"
    needed = spec.compute.num_actors * spec.compute.gpus_per_actor
    available = sum(
        g["maxReplicas"] * _gpus(g["template"]["spec"]["containers"][0]) for g in cluster["workerGroupSpecs"]
    )
    assert needed <= available, f"{label}: the job wants {needed} GPUs, the cluster can grow to {available}"


@pytest.mark.parametrize("label,obj,is_template", _of_kind("ConfigMap"), ids=[x[0] for x in _of_kind("ConfigMap")])
def test_job_specs_in_configmaps_validate(label: str, obj: dict, is_template: bool) -> None:
    from diffgen.schemas.job import JobSpec

    for key, text in (obj.get("data") or {}).items():
        doc = yaml.safe_load(text) if key.endswith((".yaml", ".yml")) else None
        if isinstance(doc, dict) and "model" in doc:
            JobSpec.model_validate(doc)


def test_every_job_module_named_in_infra_exists() -> None:
    named = set()
    for path in INFRA.rglob("*"):
        if path.is_file():
            named |= set(re.findall(r"python -m (diffgen\.jobs(?:\.\w+)+)", path.read_text(errors="replace")))
    assert named, "no `python -m diffgen.jobs.*` under infra/: the check would be vacuous"
    for module in sorted(named):
        relative = module.removeprefix("diffgen.").replace(".", "/") + ".py"  # diffgen.jobs -> the jobs/ folder
        assert (ROOT / relative).is_file(), f"infra/ runs {module}, which does not exist"


# -------------------------------------------------------------------------------------- CronJob


def _script(pod: dict) -> str:
    return "\n".join(
        " ".join(c.get("command") or []) + "\n" + "\n".join(c.get("args") or []) for c in pod["containers"]
    )


@pytest.mark.parametrize("label,obj,is_template", _of_kind("CronJob"), ids=[x[0] for x in _of_kind("CronJob")])
def test_cronjob_may_do_what_its_script_does(label: str, obj: dict, is_template: bool) -> None:
    pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure"), f"{label}: restartPolicy {pod['restartPolicy']}"
    script = _script(pod)
    needed = set().union(*(KUBECTL_VERBS[v] for v in re.findall(r"kubectl\s+(\w+)", script) if v in KUBECTL_VERBS))
    assert needed, f"{label}: its script runs no kubectl command"

    account = pod.get("serviceAccountName")
    assert account in _defined("ServiceAccount"), f"{label}: serviceAccountName {account} is not defined"
    granted: set[str] = set()
    for binding in _defined("RoleBinding").values():
        if any(s["kind"] == "ServiceAccount" and s["name"] == account for s in binding["subjects"]):
            role = _defined(binding["roleRef"]["kind"]).get(binding["roleRef"]["name"])
            assert role, f"{label}: RoleBinding {binding['metadata']['name']} refers to a missing {binding['roleRef']}"
            for rule in role["rules"]:
                if "ray.io" in rule["apiGroups"] and "rayjobs" in rule["resources"]:
                    granted |= set(rule["verbs"])
    assert needed <= granted, f"{label}: {account} may {sorted(granted)} on rayjobs, the script needs {sorted(needed)}"


@pytest.mark.parametrize("label,obj,is_template", _of_kind("CronJob"), ids=[x[0] for x in _of_kind("CronJob")])
def test_cronjob_fills_in_every_placeholder_of_its_template(label: str, obj: dict, is_template: bool) -> None:
    pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    script = _script(pod)
    templates = [_defined("ConfigMap")[v["configMap"]["name"]] for v in pod.get("volumes") or [] if "configMap" in v]
    assert templates, f"{label}: mounts no template ConfigMap"
    for cm in templates:
        for key, text in cm["data"].items():
            for name in set(PLACEHOLDER.findall(text)):
                assert f"s/@{name}@/" in script, (
                    f"{label}: ConfigMap {cm['metadata']['name']}[{key}] has @{name}@, never replaced"
                )
    deadline = obj["spec"]["jobTemplate"]["spec"].get("activeDeadlineSeconds")
    for cm in templates:
        for _, inner in _templates(cm):
            inner_deadline = inner.get("spec", {}).get("activeDeadlineSeconds")
            if deadline and inner_deadline:
                assert inner_deadline < deadline, f"{label}: the RayJob outlives the pod waiting for it"


CRONJOBS = _of_kind("CronJob")
CRONJOB_IDS = [x[0] for x in CRONJOBS]
SETTLED_CODES = [2, 3, 4]  # diffgen's exit codes a retry cannot change (jobs/cli.py)


def _rayjob_templates(pod: dict) -> list[dict]:
    cms = [_defined("ConfigMap")[v["configMap"]["name"]] for v in pod.get("volumes") or [] if "configMap" in v]
    return [inner for cm in cms for _, inner in _templates(cm) if inner["kind"] == "RayJob"]


@pytest.mark.parametrize("label,obj,is_template", CRONJOBS, ids=CRONJOB_IDS)
def test_cronjob_retries_only_an_infrastructure_failure(label: str, obj: dict, is_template: bool) -> None:
    from diffgen.jobs import api

    assert SETTLED_CODES == [api.EXIT_INVALID, api.EXIT_PARTIAL, api.EXIT_FAILED]
    job = obj["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["restartPolicy"] == "Never", f"{label}: podFailurePolicy needs restartPolicy Never"
    assert job.get("backoffLimit", 6) >= 1, f"{label}: backoffLimit 0 never retries an infrastructure failure"
    rules = (job.get("podFailurePolicy") or {}).get("rules") or []
    containers = [c["name"] for c in pod["containers"]]
    fail_job = [r for r in rules if r["action"] == "FailJob" and "onExitCodes" in r]
    assert fail_job, f"{label}: no podFailurePolicy rule fails the Job on exit codes {SETTLED_CODES}"
    for rule in fail_job:
        codes = rule["onExitCodes"]
        assert codes["operator"] == "In" and sorted(codes["values"]) == SETTLED_CODES, (
            f"{label}: FailJob on {codes}, want In {SETTLED_CODES}"
        )
        container = codes.get("containerName")
        assert container in containers, f"{label}: FailJob names container {container}, not one of {containers}"
    # Exit 1 must be left to backoffLimit (Count): no rule may fail the Job on it or ignore it.
    for rule in rules:
        codes = rule.get("onExitCodes")
        if codes and rule["action"] != "Count":
            hits_1 = 1 in codes["values"] if codes["operator"] == "In" else 1 not in codes["values"]
            assert not hits_1, f"{label}: podFailurePolicy rule {rule} takes exit 1 away from a retry"


@pytest.mark.parametrize("label,obj,is_template", CRONJOBS, ids=CRONJOB_IDS)
def test_cronjob_reads_the_token_kuberay_keeps_for_the_cluster_it_selects(
    label: str, obj: dict, is_template: bool
) -> None:
    pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    clusters = {inner["spec"]["clusterSelector"]["ray.io/cluster"] for inner in _rayjob_templates(pod)}
    assert len(clusters) == 1, f"{label}: its RayJob template selects clusters {clusters}, want one"
    (name,) = clusters
    secret = _kuberay_token_secret(_defined("RayCluster")[name])
    assert secret, f"{label}: RayCluster {name} has no token auth (authOptions.mode token)"
    script = _script(pod)
    for c in pod["containers"]:
        refs = {e["name"]: e["valueFrom"].get("secretKeyRef") for e in c.get("env") or [] if "valueFrom" in e}
        token = refs.get("RAY_AUTH_TOKEN")
        assert token == {"name": secret[0], "key": "auth_token"}, (
            f"{label}: {c['name']} gets RAY_AUTH_TOKEN from {token}, want Secret {secret[0]} key auth_token"
        )
    assert 'Authorization: Bearer $RAY_AUTH_TOKEN' in script, f"{label}: the Jobs API call sends no bearer token"


def _stub(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + f'echo "{name} $*" >> "$STUB_LOG"\n' + body)
    path.chmod(0o755)


NO_CODE = "a failed job without driver_exit_code"  # its entrypoint never ran
UNREADABLE = ""  # the Jobs API cannot be read: the curl stub fails as curl -f does on a 401


def _job_details(code: int | None) -> str:
    """The body of GET /api/jobs/<id> as Ray's dashboard serves it (json.dumps of JobDetails.dict())."""
    from ray.job_submission import JobDetails, JobStatus

    info = JobDetails(type="SUBMISSION", job_id="02000000", submission_id="diffgen-nightly-x7k2p-abcde",
                      entrypoint="python -m", status=JobStatus.FAILED, driver_exit_code=code)  # fmt: skip
    return json.dumps(info.dict())


@pytest.mark.parametrize(
    ("deployment", "status", "reply", "expected"),
    [
        ("Complete", "SUCCEEDED", None, 0),  # reply None: the Jobs API must not be asked
        ("Failed", "FAILED", 1, 1),
        ("Failed", "FAILED", 2, 2),
        ("Failed", "FAILED", 3, 3),
        ("Failed", "FAILED", 4, 4),
        ("Failed", "FAILED", -9, 1),  # the driver was killed
        ("Failed", "FAILED", NO_CODE, 1),
        ("Failed", "FAILED", UNREADABLE, 1),
        ("Failed", "FAILED", "<html>502 Bad Gateway</html>", 1),
        ("Failed", "STOPPED", None, 1),
        ("ValidationFailed", "", None, 2),  # KubeRay rejected the RayJob itself
    ],
)
def test_cronjob_script_exits_with_the_runs_code(tmp_path: Path, deployment, status, reply, expected) -> None:
    if not shutil.which("jq"):
        pytest.skip("jq is not installed here (the alpine/k8s image has it)")
    (label, obj, _), *_ = CRONJOBS
    pod = obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:2] == ["/bin/sh", "-c"], f"{label}: {container['command']}"
    template_mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "template")
    (tmp_path / "template").mkdir()
    for cm in [_defined("ConfigMap")[v["configMap"]["name"]] for v in pod["volumes"] if "configMap" in v]:
        for key, text in cm["data"].items():
            (tmp_path / "template" / key).write_text(text)
    script = container["args"][0].replace(template_mount + "/", f"{tmp_path}/template/")
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    _stub(bin_, "kubectl", """case "$*" in
  "create -f - -o name") cat > /dev/null; echo rayjob.ray.io/diffgen-nightly-x7k2p ;;
  *"{.status.jobDeploymentStatus}"*) printf %s "$STUB_DEPLOYMENT" ;;
  *"{.status.jobStatus}"*) printf %s "$STUB_STATUS" ;;
  *"{.status.dashboardURL}"*) printf %s diffgen-head-svc.ray.svc.cluster.local:8265 ;;
  *"{.status.jobId}"*) printf %s diffgen-nightly-x7k2p-abcde ;;
esac
""")
    _stub(bin_, "curl", """if [ -z "$STUB_BODY" ]; then
  echo "curl: (22) The requested URL returned error: 401" >&2; exit 22
fi
printf %s "$STUB_BODY"
""")
    log = tmp_path / "calls.log"
    body = _job_details(None if reply == NO_CODE else reply) if isinstance(reply, int) or reply == NO_CODE else reply
    env = {**os.environ, "PATH": f"{bin_}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log), "HOME": str(tmp_path),
           "STUB_DEPLOYMENT": deployment, "STUB_STATUS": status, "STUB_BODY": body or "", "RAY_AUTH_TOKEN": "s3cret"}
    result = subprocess.run(["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == expected, f"{label}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    calls = log.read_text().splitlines()
    assert calls[0].startswith("kubectl create"), calls
    api_calls = [c for c in calls if c.startswith("curl ")]
    if reply is None:
        assert not api_calls, f"{label}: asks the Jobs API when the Ray job did not fail: {api_calls}"
    else:
        (call,) = api_calls
        assert "Authorization: Bearer s3cret" in call, call
        url = "http://diffgen-head-svc.ray.svc.cluster.local:8265/api/jobs/diffgen-nightly-x7k2p-abcde"
        assert call.endswith(f" {url}"), call
    cleaned = [c for c in calls if c.startswith("kubectl get rayjobs")]
    assert bool(cleaned) == (expected == 0), f"{label}: earlier nights are cleaned up only after a success"


# ------------------------------------------------------------------------------ cluster launcher


def _launcher() -> dict:
    return yaml.safe_load((INFRA / "ray-cluster-aws.yaml").read_text())


def test_launcher_config_has_the_required_fields_and_passes_rays_validator() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = _launcher()
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert config.get(key), f"ray-cluster-aws.yaml: {key} is missing"
    assert config["head_node_type"] in config["available_node_types"], "head_node_type is not an available node type"
    validate_config(config)  # what `ray up` runs first, against Ray's own schema
    validate_config(prepare_config(copy.deepcopy(config)))


def test_launcher_runs_gpu_workers_from_the_diffgen_image() -> None:
    config = _launcher()
    workers = {name: t for name, t in config["available_node_types"].items() if name != config["head_node_type"]}
    gpu = [
        n
        for n, t in workers.items()
        if t.get("resources", {}).get("GPU") or t["node_config"]["InstanceType"][0] in "gp"
    ]
    assert gpu, "ray-cluster-aws.yaml: no GPU worker node type"
    for name in gpu:
        assert workers[name].get("min_workers", 0) <= workers[name]["max_workers"]
    assert config["docker"]["image"] == _diffgen_image()
    setup = ("setup_commands", "head_setup_commands", "worker_setup_commands")
    commands = [c for key in setup for c in config.get(key) or []]
    assert not [c for c in commands if "pip install" in c], "the image is the environment: no pip install on the nodes"
    if _dockerfile_values("ENTRYPOINT"):
        # The launcher runs `docker run ... IMAGE bash`: with an entrypoint that would be `diffgen bash`.
        reset = any("--entrypoint" in o for o in config["docker"].get("run_options", []))
        assert reset, 'the image has an ENTRYPOINT; docker.run_options must reset it (--entrypoint "")'


# ------------------------------------------------------------------------------------- compose


def test_compose_services_have_pinned_images_and_local_ports() -> None:
    path = INFRA / "minio" / "docker-compose.yaml"
    compose = yaml.safe_load(path.read_text())
    services = compose.get("services") or {}
    assert services, f"{path}: no services"
    for name, service in services.items():
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), f"{name}: image {image!r} is not pinned"
        for port in service.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name}: port {port} is published beyond loopback"
        for dep in service.get("depends_on") or {}:
            assert dep in services, f"{name}: depends on unknown service {dep}"
        for volume in service.get("volumes") or []:
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (path.parent / source).exists(), f"{name}: bind mount {source} does not exist"
            else:
                assert source in (compose.get("volumes") or {}), f"{name}: volume {source} is not declared"
    # create-bucket uploads the example manifest from the bind-mounted examples/default.
    assert (ROOT / "examples/default/manifest.parquet").is_file(), "examples/default/manifest.parquet is gone"


# ------------------------------------------------------------------------------------ Dockerfile


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in (INFRA / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, rest = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
        pending = ""
    return instructions


def _dockerfile_values(keyword: str) -> list[str]:
    return [rest for kw, rest in _dockerfile() if kw == keyword]


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerfile_builds_a_non_root_image_of_the_project() -> None:
    froms = _dockerfile_values("FROM")
    assert froms and ":" in froms[0].split()[0], "Dockerfile: FROM with a tag is missing"
    users = _dockerfile_values("USER")
    assert users and users[-1].split(":")[0] not in ("root", "0"), (
        f"Dockerfile: runs as {users[-1] if users else 'root'}"
    )
    copied = {
        src.rstrip("/") for args in _dockerfile_values("COPY") for src in args.split()[:-1] if not src.startswith("--")
    }
    folders = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())
    needed = folders | {"pyproject.toml", PYPROJECT["project"]["readme"]}
    assert needed <= copied, f"Dockerfile: `pip install` needs {sorted(needed - copied)} copied in"
    runs = " ".join(_dockerfile_values("RUN"))
    assert re.search(r"pip install (--no-deps )?/tmp/diffgen-src\b", runs), (
        "Dockerfile: the project is not pip-installed"
    )
    env = " ".join(_dockerfile_values("ENV"))
    assert "HF_HUB_OFFLINE=1" in env, "Dockerfile: HF_HUB_OFFLINE=1 is not the default"
    entrypoint = _dockerfile_values("ENTRYPOINT")
    assert entrypoint and "diffgen" in PYPROJECT["project"]["scripts"] and '"diffgen"' in entrypoint[-1]


def test_dockerfile_pins_agree_with_the_makefile_and_pyproject() -> None:
    runs = " ".join(_dockerfile_values("RUN"))
    makefile_torch = re.search(r"torch==([\w.]+)", (ROOT / "Makefile").read_text())
    docker_torch = re.search(r"pip install torch==([\w.]+)", runs)
    assert makefile_torch and docker_torch, "torch==VERSION not found in the Makefile or the Dockerfile"
    assert docker_torch.group(1) == makefile_torch.group(1), "Dockerfile and Makefile install different torch versions"
    docker_ray = re.search(r"ray\[default\]==([\w.]+)", runs)
    assert docker_ray and docker_ray.group(1) == _ray_pin(), (
        "Dockerfile's ray[default] differs from pyproject's ray pin"
    )


def test_dockerignore_keeps_the_sources_and_drops_the_rest() -> None:
    copied = [src for args in _dockerfile_values("COPY") for src in args.split()[:-1] if not src.startswith("--")]
    for src in copied:
        if (ROOT / src).is_file():
            files = [src]
        else:
            files = [str(p.relative_to(ROOT)) for p in (ROOT / src).rglob("*.py") if "__pycache__" not in p.parts]
        assert files, f"Dockerfile copies {src}, which has no files"
        for f in files:
            assert not _dockerignored(f), f".dockerignore drops {f}, which the Dockerfile copies"
    for heavy in LEFT_OUT_OF_THE_IMAGE:
        assert _dockerignored(heavy), f".dockerignore lets {heavy} into the build context"


# ---------------------------------------------------------------------------------------- Airflow


def _import_dag_without_airflow(monkeypatch: pytest.MonkeyPatch):
    for name in [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "airflow", None)  # any `import airflow...` now raises ImportError
    spec = importlib.util.spec_from_file_location("diffgen_dag", INFRA / "airflow" / "diffgen_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_airflow_dag_imports_without_airflow_and_validates_before_submitting(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import_dag_without_airflow(monkeypatch)
    assert module.dag is None
    commands = [shlex.split(command) for _, command in module.COMMANDS]
    validate = next(i for i, argv in enumerate(commands) if argv[:2] == ["diffgen", "validate"])
    submit = next(i for i, argv in enumerate(commands) if argv[:2] == ["diffgen", "submit"])
    assert validate < submit, "the DAG submits before it validates"
    assert "--manifest" in commands[validate]
    assert "--wait" in commands[submit] and "--address" in commands[submit]
    for _, command in module.COMMANDS:
        for var in re.findall(r"\$\{?(\w+)", command):
            assert var in module.ENV, f"the DAG's command uses ${var}, which its ENV never sets"
    address = commands[submit][commands[submit].index("--address") + 1]
    address = module.ENV.get(address.strip("${}"), address)
    assert re.fullmatch(r"https?://[\w.-]+:8265", address), f"--address {address} is not a Ray dashboard URL"


def test_airflow_dag_commands_parse_with_the_real_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffgen.jobs.cli import build_parser

    parser = build_parser()
    available = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    module = _import_dag_without_airflow(monkeypatch)
    sample = {
        "DIFFGEN_JOB": "job.yaml",
        "DIFFGEN_MANIFEST": "s3://b/m.parquet",
        "DIFFGEN_OUTPUT": "s3://b/out",
        "DIFFGEN_RAY_ADDRESS": "http://head:8265",
    }
    parser.exit_on_error = False
    checked = 0
    for task_id, command in module.COMMANDS:
        argv = [sample.get(a.strip("${}"), a) for a in shlex.split(command)][1:]
        if argv[0] not in available:
            continue  # a subcommand not built yet; checked once jobs/cli.py has it
        _parse(parser, argv, f"DAG task {task_id}")
        checked += 1
    if not checked:
        pytest.skip(f"diffgen.jobs.cli has none of the DAG's subcommands yet (has: {', '.join(available)})")


def _import_dag_with_fake_airflow(monkeypatch: pytest.MonkeyPatch):
    """The DAG module against stand-ins for Airflow 3's modules that record what the DAG builds."""

    class Dag:
        current = None

        def __init__(self, **kwargs: Any) -> None:
            self.kwargs, self.tasks = kwargs, []

        def __enter__(self) -> Dag:
            Dag.current = self
            return self

        def __exit__(self, *exc: object) -> None:
            Dag.current = None

    class Operator:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs, self.downstream = kwargs, []
            Dag.current.tasks.append(self)

        def __rshift__(self, other: Operator) -> Operator:
            self.downstream.append(other)
            return other

    class AirflowException(Exception):
        pass

    class AirflowFailException(AirflowException):
        pass

    names = ["airflow", "airflow.sdk", "airflow.exceptions", "airflow.providers", "airflow.providers.standard",
             "airflow.providers.standard.operators", "airflow.providers.standard.operators.python"]  # fmt: skip
    fakes = {name: types.ModuleType(name) for name in names}
    fakes["airflow.sdk"].DAG = Dag
    fakes["airflow.providers.standard.operators.python"].PythonOperator = Operator
    fakes["airflow.exceptions"].AirflowException = AirflowException
    fakes["airflow.exceptions"].AirflowFailException = AirflowFailException
    for name in [m for m in sys.modules if m == "airflow" or m.startswith("airflow.")]:
        monkeypatch.delitem(sys.modules, name)
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location("diffgen_dag", INFRA / "airflow" / "diffgen_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, fakes["airflow.exceptions"]


def test_airflow_dag_knows_diffgens_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    from diffgen.jobs import api

    module = _import_dag_without_airflow(monkeypatch)
    codes = [api.EXIT_OK, api.EXIT_INFRA, api.EXIT_INVALID, api.EXIT_PARTIAL, api.EXIT_FAILED]
    assert sorted(module.EXIT_MEANINGS) == codes
    assert module.FINAL == {api.EXIT_INVALID, api.EXIT_PARTIAL, api.EXIT_FAILED}


@pytest.mark.parametrize(
    ("code", "retried", "words"),
    [
        (0, None, None),
        (1, True, "infrastructure"),
        (2, False, "invalid input"),
        (3, False, "require_full"),
        (4, False, "max_lost_fraction"),
        (137, True, "not a diffgen exit code"),  # the shell's report of a child killed by SIGKILL
        (-9, True, "killed by signal 9"),  # the shell itself killed
        (5, True, "not a diffgen exit code"),
    ],
)
def test_airflow_maps_each_exit_code_to_retry_or_not(monkeypatch: pytest.MonkeyPatch, code, retried, words) -> None:
    module = _import_dag_without_airflow(monkeypatch)
    error = module.failure("submit", code)
    if retried is None:
        assert error is None
        return
    assert isinstance(error, module.AirflowException) and isinstance(error, RuntimeError)
    assert isinstance(error, module.AirflowFailException) is not retried
    assert f"submit exited {code}" in str(error) and words in str(error), str(error)


@pytest.mark.parametrize(("code", "retried"), [(0, None), (1, True), (2, False), (3, False), (4, False)])
def test_airflow_step_raises_by_the_exit_code_of_its_command(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, code: int, retried: bool | None
) -> None:
    module = _import_dag_without_airflow(monkeypatch)
    monkeypatch.setenv("FROM_THE_WORKER", "worker")
    command = 'echo "$FROM_THE_WORKER/$FROM_THE_STEP"; echo to-stderr >&2; exit ' + str(code)
    with caplog.at_level(logging.INFO):
        if retried is None:
            assert module.run_step("validate", command, {"FROM_THE_STEP": "step"}) is None
        else:
            with pytest.raises(module.AirflowException, match=f"validate exited {code}") as raised:
                module.run_step("validate", command, {"FROM_THE_STEP": "step"})
            assert isinstance(raised.value, module.AirflowFailException) is not retried
    assert "worker/step" in caplog.messages and "to-stderr" in caplog.messages


def test_airflow_step_killed_by_a_signal_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    module = _import_dag_without_airflow(monkeypatch)
    with pytest.raises(module.AirflowException, match="killed by signal 9") as raised:
        module.run_step("submit", "kill -9 $$", {})
    assert not isinstance(raised.value, module.AirflowFailException)


def test_airflow_dag_runs_every_step_through_the_exit_code_mapping(monkeypatch: pytest.MonkeyPatch) -> None:
    module, exceptions = _import_dag_with_fake_airflow(monkeypatch)
    dag = module.dag
    assert dag is not None and dag.kwargs["default_args"]["retries"] >= 1, "nothing left to retry an exit 1"
    assert [t.kwargs["task_id"] for t in dag.tasks] == [task_id for task_id, _ in module.COMMANDS]
    for task, (task_id, command) in zip(dag.tasks, module.COMMANDS, strict=True):
        assert task.kwargs["python_callable"] is module.run_step
        # op_kwargs is a templated field of PythonOperator: Airflow renders the Jinja in ENV.
        assert task.kwargs["op_kwargs"] == {"step": task_id, "command": command, "env": module.ENV}
    for upstream, downstream in zip(dag.tasks, dag.tasks[1:]):
        assert upstream.downstream == [downstream]
    # With Airflow present the step raises Airflow's own exceptions, which its task runner acts on.
    assert module.AirflowFailException is exceptions.AirflowFailException
    with pytest.raises(exceptions.AirflowFailException, match="submit exited 3"):
        module.run_step("submit", "exit 3", {})
    with pytest.raises(exceptions.AirflowException, match="submit exited 1") as raised:
        module.run_step("submit", "exit 1", {})
    assert not isinstance(raised.value, exceptions.AirflowFailException)
