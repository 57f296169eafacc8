# Python finding and the pinned python `websockets` venv, sourced from the repository root by
# tests/python/run.sh, tests/autobahn/run.sh and bench/deflate.sh.

# first_python CHECK CANDIDATES...: prints the first executable candidate for which
# `candidate -c CHECK` exits 0; empty candidates are skipped.
first_python() {
  local check=$1 c
  shift
  for c in "$@"; do
      [ -n "$c" ] && [ -x "$c" ] || continue
      if "$c" -c "$check" 2>/dev/null; then
          echo "$c"
          return 0
      fi
  done
  return 1
}

# websockets_venv: makes the venv once under target/python-websockets and sets VENV, or exits 2
# when there is no Python 3.9+ with venv (PYTHON3 names one) or the install fails.
websockets_venv() {
  VENV=$PWD/target/python-websockets
  local pins=(websockets==15.0.1) py
  py=$(first_python 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)' \
          "${PYTHON3:-}" "$(command -v python3 2>/dev/null || true)" \
          "$( (pyenv root 2>/dev/null || echo "$HOME/.pyenv") )"/versions/3.1[1-3]*/bin/python3) ||
      { echo "python: no Python 3.9+ with venv found (PYTHON3=/path/to/python3 names one)" >&2; exit 2; }
  if [ ! -f "$VENV/.installed" ] || [ "$(cat "$VENV/.installed")" != "$py ${pins[*]}" ]; then
      echo "python: installing ${pins[*]} into $VENV (once)" >&2
      rm -rf "$VENV"
      "$py" -m venv "$VENV" || { echo "python: $py -m venv failed" >&2; exit 2; }
      "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${pins[@]}" ||
          { echo "python: pip install ${pins[*]} into $VENV failed" >&2; exit 2; }
      echo "$py ${pins[*]}" >"$VENV/.installed"
  fi
}
