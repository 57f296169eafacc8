#!/usr/bin/env python3
"""Writes deploy/kubernetes/configmap.yaml from config/wsnorm.toml (the documented default).

Only the keys a pod needs differently are changed, each marked `# deploy:`; everything else,
rules and comments included, is the repository's file. Run it after editing config/wsnorm.toml,
or edit the ConfigMap directly for cluster-only rules.

    python3 deploy/tools/gen-configmap.py          # rewrite configmap.yaml
    python3 deploy/tools/gen-configmap.py --check  # exit 1 if configmap.yaml is out of date
"""

import os
import re
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SOURCE = os.path.join(REPO, "config", "wsnorm.toml")
TARGET = os.path.join(REPO, "deploy", "kubernetes", "configmap.yaml")

# (section, key, value, why)
CHANGES = [
    ("server", "listen", '"0.0.0.0:8080"', "the Service's targetPort"),
    ("server", "admin", '"0.0.0.0:9090"', "kubelet probes and Prometheus come from outside the pod"),
    ("server", "max_connections", "2000",
     "matches the memory limit (~45 KiB each, deploy/README.md)"),
    ("upstream", "address", '"127.0.0.1:8000"', "the backend container of the same pod"),
]

HEADER = """\
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


def render():
    lines = open(SOURCE, encoding="utf-8").read().splitlines()
    section, done = None, set()
    for i, line in enumerate(lines):
        m = re.match(r"^\s*\[+([^\]]+)\]+\s*$", line)
        if m:
            section = m.group(1).strip()
            continue
        for sec, key, value, why in CHANGES:
            if section == sec and re.match(rf"^{key}\s*=", line):
                lines[i] = f"{key} = {value}  # deploy: {why}"
                done.add((sec, key))
    missing = [f"[{s}] {k}" for s, k, _, _ in CHANGES if (s, k) not in done]
    if missing:
        sys.exit(f"gen-configmap: not found in config/wsnorm.toml: {', '.join(missing)}")
    body = "".join(("    " + l if l.strip() else "") + "\n" for l in lines)
    return HEADER + body


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        current = open(TARGET, encoding="utf-8").read() if os.path.exists(TARGET) else ""
        if current != text:
            print("deploy/kubernetes/configmap.yaml is out of date: run deploy/tools/gen-configmap.py")
            return 1
        print("deploy/kubernetes/configmap.yaml is up to date")
        return 0
    open(TARGET, "w", encoding="utf-8").write(text)
    print(f"wrote {os.path.relpath(TARGET, REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
