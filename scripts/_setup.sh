# shellcheck shell=bash
# Shared set-up for scripts/test, scripts/demo and .ci/run. Source it; it defines functions only.
#
#   hw_setup_venv    create .venv (if missing) and `pip install -e '.[dev]'` into it, skipped
#                    when pyproject.toml and the interpreter are unchanged since the last install
#                    (a hash stamp kept inside .venv)
#   hw_gst_missing   print the Debian GStreamer packages (DESIGN.md, "test camera") not installed
#   hw_test_debs_missing
#                    print the Debian packages the tests need (GStreamer, and Chromium for the
#                    end-to-end tests) that are not installed
#   hw_install_debs  apt-get install the given packages (root + apt-get only; else returns 1)

HW_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HW_VENV="$HW_ROOT/.venv"
HW_STAMP="$HW_VENV/.homewarden-install-stamp"
HW_GST_DEBS=(
  gir1.2-gst-rtsp-server-1.0
  python3-gi
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
)
# Debian's Chromium for the end-to-end tests (tests/e2e, Playwright drives /usr/bin/chromium;
# never a browser download such as `playwright install`).
HW_BROWSER_DEBS=(
  chromium
)

hw_log() { printf '[setup] %s\n' "$*" >&2; }

# An interpreter >= 3.11 that can make a venv with pip: $PYTHON, else the usual names.
hw_python() {
  local cand
  for cand in "${PYTHON:-}" python3 python3.11 python3.12 python3.13; do
    [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
    then
      command -v "$cand"
      return 0
    fi
  done
  return 1
}

hw_install_stamp() {
  { sha256sum "$HW_ROOT/pyproject.toml"; "$HW_VENV/bin/python" -VV; echo "$HW_ROOT"; } \
    | sha256sum | cut -d' ' -f1
}

hw_setup_venv() {
  local py want
  if [ ! -x "$HW_VENV/bin/python" ]; then
    py="$(hw_python)" || { hw_log "need Python >= 3.11 with venv and ensurepip (set PYTHON=)"; return 1; }
    hw_log "creating .venv with $py ($("$py" -V 2>&1))"
    "$py" -m venv "$HW_VENV"
  fi
  want="$(hw_install_stamp)"
  # The stamp alone is not trusted: the package must import from this checkout.
  if [ -f "$HW_STAMP" ] && [ "$(cat "$HW_STAMP")" = "$want" ] \
    && "$HW_VENV/bin/python" - "$HW_ROOT/src" <<'PY' 2>/dev/null
import pathlib, sys, homewarden
here = pathlib.Path(homewarden.__file__).resolve()
sys.exit(0 if here.is_relative_to(pathlib.Path(sys.argv[1]).resolve()) else 1)
PY
  then
    return 0
  fi
  hw_log "installing the project into .venv: pip install -e '.[dev]'"
  # This machine's pip config names local indexes that may be absent; their notices are noise.
  { "$HW_VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$HW_ROOT[dev]" \
      2>&1 1>&3 | sed '/is ignored: it is neither a file nor a directory/d' >&2; } 3>&1
  echo "$want" >"$HW_STAMP"
}

# hw_debs_missing PKG...: print those of PKG... that dpkg does not hold installed.
hw_debs_missing() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  echo "${missing[*]}"
}

hw_gst_missing() { hw_debs_missing "${HW_GST_DEBS[@]}"; }

hw_test_debs_missing() { hw_debs_missing "${HW_GST_DEBS[@]}" "${HW_BROWSER_DEBS[@]}"; }

hw_install_debs() {
  [ "$#" -gt 0 ] || return 0
  if ! command -v apt-get >/dev/null 2>&1; then
    hw_log "apt-get not found: cannot install $*"
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    hw_log "not root: cannot install $*"
    return 1
  fi
  hw_log "installing Debian packages: $*"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
