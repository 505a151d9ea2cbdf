#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, .venv with pinned dependencies,
# the `voicebook` Jupyter kernel. Re-runs are quick: pip runs only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }

# 1. System packages: FFmpeg's shared libraries (torchcodec needs them), a C compiler (webrtcvad,
#    used by resemblyzer, builds from source), libsndfile for soundfile, Chromium (browser test).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so' || missing+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so' || missing+=(libsndfile1)
command -v cc >/dev/null || missing+=(gcc)
# Debian's Chromium for the real-browser test of the listening panel (Playwright drives it with
# executable_path; Playwright's own browser download is never used).
[ -x /usr/bin/chromium ] || missing+=(chromium)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "voicebook set-up: missing system packages: ${missing[*]}." >&2
    echo "Install them (e.g. 'sudo apt-get install ${missing[*]}') and run this again." >&2
    exit 1
  fi
fi

# 2. Python 3.11 or 3.12 for the virtual environment.
PY=""
for candidate in python3.11 python3.12 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 12)))'; then
    PY=$candidate; break
  fi
done
[ -n "$PY" ] || { echo "voicebook set-up: needs Python 3.11 or 3.12 (coqui-tts 0.28)." >&2; exit 1; }

# 3. The virtual environment, reinstalled only when the dependency pins change.
stamp=.venv/.voicebook-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies (new or changed pins; the first time takes a few minutes, ~6 GB)"
  quiet_pip() {  # drop pip's notes about local mirror folders this machine may not have
    .venv/bin/python -m pip install --quiet "$@" 2> >(grep -v '^WARNING: Location' >&2)
  }
  quiet_pip --upgrade pip
  quiet_pip -e .
  # 4. The Jupyter kernel the notebooks, papermill and nbmake use, inside .venv.
  .venv/bin/python -m ipykernel install --sys-prefix --name voicebook \
    --display-name "Python (voicebook)" >/dev/null
  echo "$want" > "$stamp"
fi
.venv/bin/python -c 'import voicebook, TTS, papermill, scrapbook' ||
  { echo "voicebook set-up: imports fail; delete .venv and run again." >&2; exit 1; }
say "ready (.venv, kernel 'voicebook')"
