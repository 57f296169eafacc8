#!/usr/bin/env python3
"""Validates every deployment manifest offline. Run through deploy/tools/validate.sh, which
makes the pinned venv (deploy/tools/requirements.txt) this needs.

- deploy/kubernetes/*.yaml: built-in kinds against the official schemas of each version in
  K8S_VERSIONS (kubernetes-validate, strict: unknown fields fail, and so does a kind it has no
  schema for); the PodMonitor against the Prometheus Operator's typed model; kustomization.yaml
  for files that exist and the wsnorm image pinned by digest.
- deploy/cloudrun/service.yaml: Knative Serving's typed v1 `Service` model, then what Cloud Run
  itself requires of it and what wsnorm needs (the listen port is the ingress port, probes on
  the admin port, container-dependencies, limits).
- The wsnorm config each deployment mounts, read against its manifest (ports, limits).
- Any further file given (a `kubectl kustomize` rendering): each object against the schemas.

A typed model ignores fields it does not know, so each object is also dumped back and compared
with what was read: a field that does not survive (a misspelt key) is a failure.

Prints `ok: ...` or `FAIL: ...` per check, then `N passed, N failed`; exit 1 on any failure.
    python3 deploy/tools/validate_manifests.py [RENDERED.yaml ...]
"""

import glob
import json
import os
import re
import sys
import tomllib

import kubernetes_validate
import yaml
from cloudcoil.models.knative_serving.serving import v1 as knative
from cloudcoil.models.prometheus_operator import v1 as prometheus_operator
from kubernetes_validate.utils import SchemaNotFoundError
from pydantic import ValidationError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
# The oldest Kubernetes the manifests support (preStop `sleep`) and the newest with schemas here.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
WSNORM_IMAGE = "registry.example.com/wsnorm"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# Cloud Run's own limits (its documentation: request timeout, concurrency, shutdown).
CLOUDRUN_MAX_TIMEOUT_SECS = 3600
CLOUDRUN_MAX_CONCURRENCY = 1000
CLOUDRUN_SIGKILL_AFTER_SECS = 10

results = {"ok": 0, "FAIL": 0}


def report(passed, what):
    word = "ok" if passed else "FAIL"
    results[word] += 1
    print(f"{word}: {what}", flush=True)
    return passed


def rel(path):
    return os.path.relpath(path, REPO)


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def lost_fields(read, dumped, path="$"):
    """Paths present in `read` that `dumped` (the model's round trip) no longer has or changed."""
    if isinstance(read, dict):
        if not isinstance(dumped, dict):
            return [path]
        lost = []
        for key, value in read.items():
            if key not in dumped:
                lost.append(f"{path}.{key}")
            else:
                lost += lost_fields(value, dumped[key], f"{path}.{key}")
        return lost
    if isinstance(read, list):
        if not isinstance(dumped, list) or len(read) != len(dumped):
            return [path]
        return [p for i, (a, b) in enumerate(zip(read, dumped))
                for p in lost_fields(a, b, f"{path}[{i}]")]
    return [] if read == dumped else [path]


def check_model(model, doc, what):
    """Validates `doc` with a typed model; fails on errors and on fields the model dropped.
    Returns the object, or None when it failed."""
    try:
        obj = model.model_validate(doc)
    except ValidationError as e:
        report(False, f"{what}: " + "; ".join(
            ".".join(str(p) for p in err["loc"]) + f": {err['msg']}" for err in e.errors()))
        return None
    except (TypeError, ValueError) as e:
        report(False, f"{what}: {e}")
        return None
    lost = lost_fields(doc, obj.model_dump(by_alias=True, exclude_unset=True, mode="json"))
    if lost:
        report(False, f"{what}: not in the model (misspelt or unsupported): " + ", ".join(lost))
        return None
    report(True, what)
    return obj


def check_schema(doc, what):
    """Every built-in object against the official schemas, strictly, for each version."""
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            report(True, f"{what} against Kubernetes {version}")
        except kubernetes_validate.ValidationError as e:
            where = ".".join(str(p) for p in e.path) or "(top)"
            report(False, f"{what} against Kubernetes {version}: {where}: {e.message}")
        except SchemaNotFoundError as e:
            report(False, f"{what}: {e.message}")


def describe(path, doc):
    name = (doc.get("metadata") or {}).get("name", "?")
    return f"{rel(path)} {doc.get('kind', '?')}/{name}"


def port_of(address):
    return int(address.rsplit(":", 1)[1])


# ---- Kubernetes ----------------------------------------------------------------------------

def check_kustomization(path, doc):
    folder = os.path.dirname(path)
    missing = [r for r in doc.get("resources", []) if not os.path.exists(os.path.join(folder, r))]
    report(not missing, f"{rel(path)}: every resource exists"
           + (f" (missing: {', '.join(missing)})" if missing else ""))
    # A manifest added to the folder must be listed, or at least named in a comment (podmonitor).
    text = open(path, encoding="utf-8").read()
    unnamed = [os.path.basename(f) for f in sorted(glob.glob(os.path.join(folder, "*.yaml")))
               if f != path and os.path.basename(f) not in text]
    report(not unnamed, f"{rel(path)}: names every manifest of its folder"
           + (f" (not named: {', '.join(unnamed)})" if unnamed else ""))
    images = [i for i in doc.get("images", []) if i.get("name") == WSNORM_IMAGE]
    digest = images[0].get("digest", "") if images else ""
    report(bool(DIGEST.match(digest)),
           f"{rel(path)}: {WSNORM_IMAGE} pinned by digest (images[].digest = {digest or 'none'})")


def check_kubernetes():
    folder = os.path.join(REPO, "deploy", "kubernetes")
    objects = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
        try:
            docs = load_all(path)
        except yaml.YAMLError as e:
            report(False, f"{rel(path)}: not YAML: {e}")
            continue
        for doc in docs:
            kind = doc.get("kind")
            if kind == "Kustomization":
                check_kustomization(path, doc)
            elif kind == "PodMonitor":
                check_model(prometheus_operator.PodMonitor, doc,
                            f"{describe(path, doc)} against the Prometheus Operator model")
            else:
                check_schema(doc, describe(path, doc))
            objects[(kind, (doc.get("metadata") or {}).get("name"))] = doc
    check_kubernetes_config(objects)


def check_kubernetes_config(objects):
    """The ConfigMap's wsnorm.toml against the Deployment's ports."""
    cm, dep = objects.get(("ConfigMap", "wsnorm-rules")), objects.get(("Deployment", "chat"))
    if not report(cm is not None and dep is not None, "kubernetes: ConfigMap wsnorm-rules and "
                  "Deployment chat exist"):
        return
    config = tomllib.loads(cm["data"]["wsnorm.toml"])
    containers = {c["name"]: c for c in dep["spec"]["template"]["spec"]["containers"]}
    ports = {p["name"]: p["containerPort"]
             for c in containers.values() for p in c.get("ports", [])}
    for key, address, port_name in [("server.listen", config["server"]["listen"], "http"),
                                    ("server.admin", config["server"]["admin"], "admin"),
                                    ("backend.address", config["backend"]["address"],
                                     "backend")]:
        report(port_of(address) == ports.get(port_name),
               f"kubernetes: {key} {address} is containerPort {port_name} ({ports.get(port_name)})")


# ---- Cloud Run -----------------------------------------------------------------------------

def env_of(container):
    return {e.name: e.value for e in container.env or []}


def http_probe(probe):
    return (probe.http_get.path, probe.http_get.port) if probe and probe.http_get else None


def check_cloudrun():
    path = os.path.join(REPO, "deploy", "cloudrun", "service.yaml")
    docs = load_all(path)
    if not report(len(docs) == 1, f"{rel(path)}: one object"):
        return
    svc = check_model(knative.Service, docs[0],
                      f"{describe(path, docs[0])} against Knative Serving's v1 Service model")
    if svc is None:
        return
    template = svc.spec.template
    spec, annotations = template.spec, (template.metadata.annotations or {})
    containers = {c.name: c for c in spec.containers}
    where = rel(path)

    # Cloud Run: one ingress container (the only one with a port), one port, HTTP/1.
    ingress = [c for c in spec.containers if c.ports]
    if not report(len(ingress) == 1 and ingress[0].name == "wsnorm" and len(ingress[0].ports) == 1,
                  f"{where}: wsnorm is the only container with a port, and has one"):
        return
    wsnorm, port = ingress[0], ingress[0].ports[0]
    report(port.name == "http1", f"{where}: the ingress port is named {port.name!r}: http1, since "
           "WebSocket upgrades need HTTP/1.1 (h2c would be end-to-end HTTP/2)")
    report("@sha256:" in wsnorm.image, f"{where}: wsnorm's image is pinned by digest")

    # wsnorm listens where Cloud Run sends requests (PORT = containerPort).
    env = env_of(wsnorm)
    config_path = env.get("WSNORM_CONFIG", "")
    listen = env.get("WSNORM_LISTEN", "")
    report(listen.startswith("0.0.0.0:") and port_of(listen) == port.container_port,
           f"{where}: WSNORM_LISTEN {listen or '(unset)'} is 0.0.0.0:containerPort "
           f"({port.container_port})")
    admin = env.get("WSNORM_ADMIN", "")

    # Probes on the admin listener: startup on /readyz, liveness on /healthz.
    admin_port = port_of(admin) if admin else None
    report(http_probe(wsnorm.startup_probe) == ("/readyz", admin_port),
           f"{where}: wsnorm's startupProbe is GET /readyz on WSNORM_ADMIN's port ({admin_port})")
    report(http_probe(wsnorm.liveness_probe) == ("/healthz", admin_port),
           f"{where}: wsnorm's livenessProbe is GET /healthz on WSNORM_ADMIN's port ({admin_port})")

    # wsnorm starts after the containers it depends on, each of which has a startup probe.
    try:
        deps = json.loads(annotations.get("run.googleapis.com/container-dependencies", "{}"))
    except json.JSONDecodeError as e:
        deps = {}
        report(False, f"{where}: container-dependencies is not JSON: {e}")
    known = all(name in containers for k, v in deps.items() for name in [k, *v])
    report(known and "backend" in deps.get("wsnorm", []),
           f"{where}: container-dependencies makes wsnorm wait for backend ({deps})")
    report(all(containers[d].startup_probe for d in deps.get("wsnorm", []) if d in containers),
           f"{where}: every container wsnorm waits for has a startupProbe")

    report(0 < spec.timeout_seconds <= CLOUDRUN_MAX_TIMEOUT_SECS,
           f"{where}: timeoutSeconds {spec.timeout_seconds} within Cloud Run's "
           f"{CLOUDRUN_MAX_TIMEOUT_SECS}")
    report(0 < spec.container_concurrency <= CLOUDRUN_MAX_CONCURRENCY,
           f"{where}: containerConcurrency {spec.container_concurrency} within Cloud Run's "
           f"{CLOUDRUN_MAX_CONCURRENCY}")

    # The config comes from a pinned secret version mounted where WSNORM_CONFIG points.
    mounts = {m.name: m.mount_path for m in wsnorm.volume_mounts or []}
    volumes = {v.name: v for v in spec.volumes or []}
    secret = next((volumes[n].secret for n, p in mounts.items()
                   if p == os.path.dirname(config_path) and n in volumes and volumes[n].secret),
                  None)
    items = {i.path: i.key for i in (secret.items or [])} if secret else {}
    key = items.get(os.path.basename(config_path))
    report(key is not None and key != "latest",
           f"{where}: WSNORM_CONFIG {config_path or '(unset)'} is a pinned version of a mounted "
           f"secret (version {key})")
    check_cloudrun_config(where, port.container_port, admin_port, spec, containers)


def check_cloudrun_config(where, ingress_port, admin_port, spec, containers):
    """deploy/cloudrun/wsnorm.toml (the secret's content) against service.yaml."""
    path = os.path.join(REPO, "deploy", "cloudrun", "wsnorm.toml")
    config = tomllib.load(open(path, "rb"))
    server, name = config["server"], rel(path)
    report(port_of(server["listen"]) == ingress_port,
           f"{name}: server.listen {server['listen']} is the ingress port ({ingress_port})")
    report(port_of(server["admin"]) == admin_port,
           f"{name}: server.admin {server['admin']} is WSNORM_ADMIN's port ({admin_port})")
    report(server["max_connections"] >= spec.container_concurrency,
           f"{name}: server.max_connections {server['max_connections']} >= containerConcurrency "
           f"{spec.container_concurrency}")
    report(server["drain_timeout_secs"] < CLOUDRUN_SIGKILL_AFTER_SECS,
           f"{name}: server.drain_timeout_secs {server['drain_timeout_secs']} < the "
           f"{CLOUDRUN_SIGKILL_AFTER_SECS} s Cloud Run gives before SIGKILL")
    backend = containers.get("backend")
    probe = http_probe(backend.startup_probe) if backend else None
    backend = config["backend"]["address"]
    report(probe is not None and port_of(backend) == probe[1],
           f"{name}: backend.address {backend} is the port the backend is probed on "
           f"({probe[1] if probe else None})")


# ---- a rendered kustomization --------------------------------------------------------------

def check_rendered(path):
    docs = load_all(path)
    report(bool(docs), f"{path}: has objects ({len(docs)})")
    for doc in docs:
        if doc.get("kind") != "PodMonitor":
            check_schema(doc, f"rendered {doc.get('kind')}/{doc['metadata']['name']}")
    images = [c["image"] for d in docs if d.get("kind") == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]
              if c["image"].startswith(WSNORM_IMAGE)]
    pinned = [i for i in images if "@" in i and DIGEST.match(i.split("@", 1)[1])]
    report(bool(images) and pinned == images,
           f"{path}: the wsnorm image is rendered with its digest ({', '.join(images)})")


def guarded(check, *args):
    """Runs one group of checks; a file too broken to read (a wrong type, a missing key) is one
    failure with its reason, and the other groups still run."""
    try:
        check(*args)
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        report(False, f"{check.__name__}{args or ''}: stopped by {type(e).__name__}: {e}")


def main():
    guarded(check_kubernetes)
    guarded(check_cloudrun)
    for rendered in sys.argv[1:]:
        guarded(check_rendered, rendered)
    print(f"{results['ok']} passed, {results['FAIL']} failed")
    return 1 if results["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
