#!/bin/sh
# Creates empty stand-ins for every target Cargo.toml declares, so the Dockerfile can build
# (and cache) the dependencies from Cargo.toml + Cargo.lock alone, before the sources are copied.
# Cargo refuses a manifest whose [[bin]]/[[example]]/[[test]]/[[bench]]/[lib] or `build = ...`
# file is missing, even when building only `--bin wsnorm`; auto-discovered targets (examples/,
# tests/, benches/ without a section) need nothing, as those folders are not copied yet.
# Usage: stub-targets.sh [Cargo.toml]   (run in the crate root; POSIX sh + awk, no shell-isms)
set -eu
manifest="${1:-Cargo.toml}"

# One path per line: the file each declared target would be read from.
paths=$(awk '
  function flush() {
    if (kind == "") return
    if (path != "") { print path }
    else if (kind == "lib") { print "src/lib.rs" }
    else if (kind == "bin") { print (name == pkg ? "src/main.rs" : "src/bin/" name ".rs") }
    else if (kind == "example") { print "examples/" name ".rs" }
    else if (kind == "test") { print "tests/" name ".rs" }
    else if (kind == "bench") { print "benches/" name ".rs" }
    kind = ""; name = ""; path = ""
  }
  function value(line) { sub(/^[^=]*=[ \t]*"/, "", line); sub(/".*$/, "", line); return line }
  /^[ \t]*\[/ {
    flush(); section = $0; gsub(/[ \t\[\]]/, "", section)
    if (section ~ /^(lib|bin|example|test|bench)$/) kind = section
    next
  }
  section == "package" && /^[ \t]*name[ \t]*=/  { pkg = value($0) }
  section == "package" && /^[ \t]*build[ \t]*=[ \t]*"/ { print value($0) }
  kind != "" && /^[ \t]*name[ \t]*=/ { name = value($0) }
  kind != "" && /^[ \t]*path[ \t]*=/ { path = value($0) }
  END { flush() }
' "$manifest")

# The crate's own entry points always get a stub (src/main.rs is the wsnorm binary).
for p in src/main.rs src/lib.rs $paths; do
  [ -e "$p" ] && continue
  mkdir -p "$(dirname "$p")"
  case "$p" in
    src/lib.rs) : > "$p" ;;
    *) echo 'fn main() {}' > "$p" ;;
  esac
  echo "stub: $p"
done
