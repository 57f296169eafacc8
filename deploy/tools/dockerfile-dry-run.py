#!/usr/bin/env python3
"""Runs the Dockerfile's builder stage without Docker, to check it where no engine runs.

Reads the repository's Dockerfile, and for the first stage (up to the second FROM) carries out
WORKDIR, COPY and RUN in a scratch root: WORKDIR /build becomes ROOT/build, COPY copies from the
repository keeping modification times (as Docker does), RUN runs `/bin/sh -c` there. The base
image is this machine instead of rust:1-bookworm (same Debian release). Then it checks that every
`COPY --from=builder` source of the runtime stage exists, and prints what `ldd` says the binary
needs, for comparison with what gcr.io/distroless/cc-debian12 ships.

    python3 deploy/tools/dockerfile-dry-run.py [--root DIR]

Exit 0 when every step succeeded. Everything under --root DIR is deleted first except
DIR/build/target, so a second run starts from fresh sources with warm build artifacts (like
Docker's layer cache); cargo still rebuilds whatever changed.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def instructions(path):
    """(keyword, argument text) per instruction; continuations joined, comment lines dropped."""
    out, buf = [], ""
    for raw in open(path, encoding="utf-8"):
        line = raw.rstrip("\n")
        if line.strip().startswith("#") or (not line.strip() and not buf):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        keyword, _, rest = buf.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buf = ""
    return out


def copy(sources, dest, cwd, root):
    """COPY from the repository (the build context) into the scratch root, keeping mtimes."""
    target = root + dest if os.path.isabs(dest) else os.path.join(cwd, dest)
    for src in sources:
        full = os.path.join(REPO, src)
        if os.path.isdir(full):
            # COPY dir/ dest/ copies the directory's contents into dest.
            shutil.copytree(full, target, dirs_exist_ok=True, copy_function=shutil.copy2)
        elif dest.endswith("/"):
            os.makedirs(target, exist_ok=True)
            shutil.copy2(full, os.path.join(target, os.path.basename(src)))
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy2(full, target)
    print(f"    copied {sources} -> {dest}")


def fresh(root):
    """Deletes everything under root except root/build/target (a fresh tree, warm artifacts)."""
    keep = os.path.join(root, "build", "target")
    if not os.path.isdir(root):
        return
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name == "build" and os.path.isdir(path):
            for inner in os.listdir(path):
                if os.path.join(path, inner) != keep:
                    p = os.path.join(path, inner)
                    shutil.rmtree(p) if os.path.isdir(p) and not os.path.islink(p) else os.remove(p)
        elif os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.remove(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/wsnorm-dockerfile-root")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    fresh(root)
    steps = instructions(os.path.join(REPO, "Dockerfile"))
    froms = [i for i, (k, _) in enumerate(steps) if k == "FROM"]
    builder, runtime = steps[froms[0] + 1 : froms[1]], steps[froms[1] :]
    print(f"builder stage: {steps[froms[0]][1]}")
    cwd = root
    for keyword, rest in builder:
        print(f"==> {keyword} {rest}")
        if keyword == "WORKDIR":
            cwd = root + rest
            os.makedirs(cwd, exist_ok=True)
        elif keyword == "COPY":
            words = [w for w in shlex.split(rest) if not w.startswith("--")]
            copy(words[:-1], words[-1], cwd, root)
        elif keyword == "RUN":
            t0 = time.monotonic()
            rc = subprocess.run(["/bin/sh", "-c", rest], cwd=cwd).returncode
            print(f"    exit {rc} after {time.monotonic() - t0:.0f} s")
            if rc != 0:
                return rc
        else:
            print("    (not emulated)")
    print(f"runtime stage: {runtime[0][1]}")
    for keyword, rest in runtime[1:]:
        print(f"    {keyword} {rest}")
        if keyword == "COPY" and "--from=builder" in rest:
            src = [w for w in shlex.split(rest) if not w.startswith("--")][0]
            if not os.path.exists(root + src):
                print(f"MISSING: {src} was not produced by the builder stage")
                return 1
            binary = root + src
        elif keyword == "COPY":
            src = [w for w in shlex.split(rest) if not w.startswith("--")][0]
            if not os.path.exists(os.path.join(REPO, src)):
                print(f"MISSING: {src} is not in the build context")
                return 1
    print(f"==> ldd {binary} ({os.path.getsize(binary)} bytes)")
    return subprocess.run(["ldd", binary]).returncode


if __name__ == "__main__":
    sys.exit(main())
