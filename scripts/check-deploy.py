"""Checks the Kubernetes manifests under deploy/kubernetes/ without a cluster.

Run by scripts/check-deploy.sh with the Python of its tools' venv (kubernetes-validate and
PyYAML from PyPI); offline: the API schemas come inside the kubernetes-validate package.

  1. Every document of every manifest is validated against the API schemas of each
     Kubernetes version given, strictly: unknown fields, unknown kinds and duplicate YAML
     keys are errors (kubectl would keep the last duplicate silently).
  2. The kustomization lists every manifest in the folder and nothing that is missing.
  3. Every pod template follows what the deployment promises: non-root, no privilege
     escalation, read-only root filesystem, all capabilities dropped, the runtime's
     seccomp profile, resource requests and a memory limit, liveness and readiness probes.
  4. portico.toml's `*_file` keys name files that the gateway's pod mounts (a projected
     Secret item or the config map), so a renamed secret cannot slip through.
  5. Negative controls: an unknown field and a duplicate key are rejected, so a validator
     that stopped validating would fail this check instead of passing it.

Usage: check-deploy.py [--rendered FILE] [--k8s VERSION]... DIR
"""

import argparse
import copy
import pathlib
import sys
import tomllib

import kubernetes_validate
import yaml

WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a mapping with the same key twice."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_all(text, name):
    docs = [d for d in yaml.load_all(text, Loader=UniqueKeyLoader) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise ValueError(f"{name}: a document without kind/apiVersion")
    return docs


def validate_doc(doc, versions):
    """Problems of one resource against each version's schema (strict)."""
    problems = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top level)"
            problems.append(f"Kubernetes {version}: {where}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"Kubernetes {version}: no schema: {e}")
    return problems


def pod_spec(doc):
    spec = doc.get("spec", {})
    if doc["kind"] == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {}).get("spec")


def check_pod(name, pod):
    problems = []
    psc = pod.get("securityContext", {})
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: pod securityContext.seccompProfile.type is not RuntimeDefault")
    if pod.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    containers = pod.get("containers", []) + pod.get("initContainers", [])
    for c in containers:
        cname = f"{name}/{c.get('name')}"
        sc = c.get("securityContext", {})
        non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        user = sc.get("runAsUser", psc.get("runAsUser"))
        if non_root is not True or user in (None, 0):
            problems.append(f"{cname}: not runAsNonRoot with a numeric non-zero runAsUser")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{cname}: allowPrivilegeEscalation is not false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{cname}: readOnlyRootFilesystem is not true")
        if sc.get("privileged"):
            problems.append(f"{cname}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            problems.append(f"{cname}: capabilities.drop does not include ALL")
        if sc.get("capabilities", {}).get("add"):
            problems.append(f"{cname}: adds capabilities")
        res = c.get("resources", {})
        for kind in ("cpu", "memory"):
            if kind not in res.get("requests", {}):
                problems.append(f"{cname}: no {kind} request")
        if "memory" not in res.get("limits", {}):
            problems.append(f"{cname}: no memory limit")
        if c in pod.get("containers", []):
            for probe in ("livenessProbe", "readinessProbe"):
                if probe not in c:
                    problems.append(f"{cname}: no {probe}")
    return problems


def check_secret_files(config_path, docs):
    """portico.toml's `*_file` keys against what the gateway's pod mounts."""
    config = tomllib.loads(config_path.read_text())
    wanted = []

    def walk(table, prefix):
        for key, value in table.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key.endswith("_file") and isinstance(value, str):
                wanted.append((f"{prefix}{key}", value))

    walk(config, "")
    deployments = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "portico"]
    if len(deployments) != 1:
        return ["no Deployment named portico to check portico.toml's files against"]
    pod = pod_spec(deployments[0])
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    provided = set()
    container = next(c for c in pod["containers"] if c["name"] == "portico")
    for mount in container.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        base = mount["mountPath"].rstrip("/")
        items = []
        if "projected" in volume:
            for source in volume["projected"].get("sources", []):
                for kind in ("secret", "configMap"):
                    items += [i["path"] for i in source.get(kind, {}).get("items", [])]
        for kind in ("secret", "configMap"):
            items += [i["path"] for i in volume.get(kind, {}).get("items", [])]
        if volume.get("configMap", {}).get("name") == "portico-config" and not items:
            items.append(config_path.name)
        provided.update(f"{base}/{p}" for p in items)
    problems = [
        f"portico.toml: `{key}` = {path} is not mounted by the portico Deployment"
        for key, path in wanted
        if path not in provided
    ]
    args = container.get("args", [])
    if "--config" in args and args[args.index("--config") + 1] not in provided:
        problems.append("the portico container's --config file is not mounted from portico-config")
    return problems


def negative_controls(docs, versions):
    """The checks must still reject what they are meant to reject."""
    problems = []
    deployment = next((d for d in docs if d["kind"] == "Deployment"), None)
    if deployment is not None:
        broken = copy.deepcopy(deployment)
        pod_spec(broken)["containers"][0]["readOnlyRootFileSystem"] = True  # misspelt
        if not validate_doc(broken, versions[:1]):
            problems.append("negative control: an unknown container field was not rejected")
    try:
        load_all("apiVersion: v1\nkind: Service\nkind: Service\n", "control")
        problems.append("negative control: a duplicate YAML key was not rejected")
    except yaml.YAMLError:
        pass
    return problems


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir", type=pathlib.Path)
    parser.add_argument("--k8s", action="append", required=True, help="Kubernetes version")
    parser.add_argument("--rendered", type=pathlib.Path, help="`kubectl kustomize` output")
    args = parser.parse_args()
    versions = args.k8s

    problems = []
    manifests = sorted(p for p in args.dir.glob("*.yaml") if p.name != "kustomization.yaml")
    all_docs = []
    for path in manifests:
        try:
            docs = load_all(path.read_text(), path.name)
        except (yaml.YAMLError, ValueError) as e:
            problems.append(f"{path}: {e}")
            continue
        for doc in docs:
            name = f"{path.name}: {doc['kind']}/{doc.get('metadata', {}).get('name')}"
            problems += [f"{name}: {p}" for p in validate_doc(doc, versions)]
            if doc["kind"] in WORKLOADS or doc["kind"] == "CronJob":
                problems += check_pod(name, pod_spec(doc) or {})
            print(f"  {name}: checked against Kubernetes {', '.join(versions)}")
        all_docs += docs

    kustomization = args.dir / "kustomization.yaml"
    before = len(problems)
    if kustomization.exists():
        k = load_all(kustomization.read_text(), kustomization.name)[0]
        listed = set(k.get("resources", []))
        for name in sorted(listed):
            if not (args.dir / name).exists():
                problems.append(f"kustomization.yaml: resource {name} does not exist")
        for path in manifests:
            if path.name not in listed:
                problems.append(f"kustomization.yaml: {path.name} is not listed in resources")
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for f in gen.get("files", []):
                if not (args.dir / f.split("=")[-1]).exists():
                    problems.append(f"kustomization.yaml: generator file {f} does not exist")
        if len(problems) == before:
            print(f"  {kustomization.name}: {len(listed)} resources, all present and listed")

    config = args.dir / "portico.toml"
    if config.exists():
        found = check_secret_files(config, all_docs)
        problems += found
        if not found:
            print("  portico.toml: every *_file key is mounted by the portico Deployment")

    if args.rendered:
        docs = load_all(args.rendered.read_text(), args.rendered.name)
        for doc in docs:
            name = f"rendered: {doc['kind']}/{doc['metadata'].get('name')}"
            problems += [f"{name}: {p}" for p in validate_doc(doc, versions)]
        print(f"  kubectl kustomize output: {len(docs)} resources checked")

    problems += negative_controls(all_docs, versions)

    if problems:
        print(f"check-deploy: {len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
