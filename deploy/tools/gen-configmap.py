#!/usr/bin/env python3
"""Writes the deployed copies of config/wsnorm.toml (the documented default):
deploy/kubernetes/configmap.yaml (the ConfigMap) and deploy/cloudrun/wsnorm.toml (the file stored
in Secret Manager and mounted by deploy/cloudrun/service.yaml).

Only the keys a deployment needs differently are changed, each marked `# deploy:`; everything
else, rules and comments included, is the repository's file. Run it after editing
config/wsnorm.toml, or edit a generated file directly for deployment-only rules.

    python3 deploy/tools/gen-configmap.py          # rewrite both
    python3 deploy/tools/gen-configmap.py --check  # exit 1 if either is out of date (run by CI)
"""

import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SOURCE = os.path.join(REPO, "config", "wsnorm.toml")

# (section, key, value, why) for the Kubernetes pod (deploy/kubernetes/deployment.yaml).
KUBERNETES = [
    ("server", "listen", '"0.0.0.0:8080"', "the Service's targetPort"),
    ("server", "admin", '"0.0.0.0:9090"', "kubelet probes and Prometheus come from outside the pod"),
    ("server", "max_connections", "2000",
     "matches the memory limit (~6 KiB each, and large messages in flight, deploy/README.md)"),
    ("backend", "address", '"127.0.0.1:8000"', "the backend container of the same pod"),
    ("websocket.compression", "context_takeover", "false",
     "each message borrows a per-thread zlib stream: no compression memory kept per connection, so the ~6 KiB per connection of the memory limit holds (context takeover keeps ~300 KiB per compressed leg; deploy/README.md)"),
]

# The same for the Cloud Run instance (deploy/cloudrun/service.yaml).
CLOUDRUN = [
    ("server", "listen", '"0.0.0.0:8080"',
     "the ingress containerPort (Cloud Run's PORT); WSNORM_LISTEN says the same"),
    ("server", "admin", '"0.0.0.0:9090"',
     "the startup and liveness probes; only port 8080 is reachable from outside"),
    ("server", "max_connections", "1000",
     "= containerConcurrency: Cloud Run adds an instance before wsnorm would answer 503"),
    ("server", "drain_timeout_secs", "8", "Cloud Run sends SIGKILL 10 s after SIGTERM"),
    ("server", "trusted_proxies", '["0.0.0.0/0", "::/0"]',
     "only Cloud Run's front end reaches port 8080, and it sets X-Forwarded-* itself"),
    ("backend", "address", '"127.0.0.1:8000"', "the backend sidecar of the same instance"),
    ("websocket.compression", "context_takeover", "false",
     "each message borrows a per-thread zlib stream: no compression memory kept per connection, so the ~6 KiB per connection of the memory limit holds (context takeover keeps ~300 KiB per compressed leg; deploy/README.md)"),
]

KUBERNETES_HEADER = """\
# The wsnorm rules file, mounted as a directory at /etc/wsnorm/ in the wsnorm container.
# Generated from config/wsnorm.toml by deploy/tools/gen-configmap.py (changed keys: `# deploy:`).
# Edit, check (`wsnorm check --config FILE`, `wsnorm test-rules --config FILE config/tests/*`),
# then `kubectl apply -k deploy/kubernetes/`: kubelet swaps the mounted file within about a
# minute and every wsnorm hot-reloads it without dropping a connection. An invalid file is
# refused and the previous rules stay live (wsnorm_config_reloads_total{result="error"}).
# [server] settings apply only after a restart (kubectl rollout restart deployment/chat).
apiVersion: v1
kind: ConfigMap
metadata:
  name: wsnorm-rules
  labels:
    app.kubernetes.io/name: chat
    app.kubernetes.io/component: wsnorm
data:
  wsnorm.toml: |
"""

CLOUDRUN_HEADER = """\
# wsnorm's config on Cloud Run: stored as a version of the Secret Manager secret `wsnorm-rules`
# and mounted at /etc/wsnorm/wsnorm.toml by deploy/cloudrun/service.yaml.
# Generated from config/wsnorm.toml by deploy/tools/gen-configmap.py (changed keys: `# deploy:`).
# A change goes out as a new secret version named in a new revision (deploy/README.md, "Cloud Run").

"""


def render(changes):
    """config/wsnorm.toml with `changes` applied, as a list of lines."""
    lines = open(SOURCE, encoding="utf-8").read().splitlines()
    section, done = None, set()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*\[+([^\]]+)\]+\s*$", line)
        if m:
            section = m.group(1).strip()
            continue
        for sec, key, value, why in changes:
            if section == sec and re.match(rf"^{key}\s*=", line):
                lines[i] = f"{key} = {value}  # deploy: {why}"
                done.add((sec, key))
    missing = [f"[{s}] {k}" for s, k, _, _ in changes if (s, k) not in done]
    if missing:
        sys.exit(f"gen-configmap: not found in config/wsnorm.toml: {', '.join(missing)}")
    return lines


def configmap():
    body = "".join(("    " + l if l.strip() else "") + "\n" for l in render(KUBERNETES))
    return KUBERNETES_HEADER + body


def cloudrun_toml():
    return CLOUDRUN_HEADER + "".join(l + "\n" for l in render(CLOUDRUN))


TARGETS = [
    (os.path.join(REPO, "deploy", "kubernetes", "configmap.yaml"), configmap),
    (os.path.join(REPO, "deploy", "cloudrun", "wsnorm.toml"), cloudrun_toml),
]


def main():
    check = sys.argv[1:] == ["--check"]
    stale = 0
    for target, make in TARGETS:
        text, name = make(), os.path.relpath(target, REPO)
        if check:
            current = open(target, encoding="utf-8").read() if os.path.exists(target) else ""
            if current != text:
                print(f"{name} is out of date: run deploy/tools/gen-configmap.py")
                stale += 1
            else:
                print(f"{name} is up to date")
            continue
        open(target, "w", encoding="utf-8").write(text)
        print(f"wrote {name}")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
