# The pinned python `websockets` venv, made once under target/python-websockets (sourced, from
# the repository root): tests/python/run.sh and bench/deflate.sh. websockets_venv sets VENV, or
# exits 2 when there is no Python 3.9+ with venv (PYTHON3 names one).
websockets_venv() {
  VENV=$PWD/target/python-websockets
  local pins=(websockets==15.0.1) py="" c
  for c in "${PYTHON3:-}" "$(command -v python3 2>/dev/null || true)" \
           "$( (pyenv root 2>/dev/null || echo "$HOME/.pyenv") )"/versions/3.1[1-3]*/bin/python3; do
      [ -n "$c" ] && [ -x "$c" ] || continue
      if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
          py=$c
          break
      fi
  done
  [ -n "$py" ] || { echo "python: no Python 3.9+ with venv found" >&2; exit 2; }
  if [ ! -f "$VENV/.installed" ] || [ "$(cat "$VENV/.installed")" != "$py ${pins[*]}" ]; then
      echo "python: installing ${pins[*]} into $VENV (once)" >&2
      rm -rf "$VENV"
      "$py" -m venv "$VENV"
      "$VENV/bin/python" -m pip install --disable-pip-version-check -q "${pins[@]}"
      echo "$py ${pins[*]}" >"$VENV/.installed"
  fi
}
