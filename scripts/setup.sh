#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: system packages, .venv installed from uv.lock (every
# package at the version CI tested), the `voicebook` Jupyter kernel, and a check of both.
# Re-runs take seconds: uv installs only what differs from the lock.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[setup] %s\n' "$*"; }
uv_only=false  # 'make lock' needs only uv
[ "${1:-}" = --uv-only ] && uv_only=true

# 1. System packages: FFmpeg's shared libraries (torchcodec needs them), a C compiler (webrtcvad,
#    used by resemblyzer, builds from source), libsndfile for soundfile, Chromium (browser test).
missing=()
ldconfig -p 2>/dev/null | grep -q 'libavcodec\.so' || missing+=(ffmpeg)
ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so' || missing+=(libsndfile1)
command -v cc >/dev/null || missing+=(gcc)
# Debian's Chromium for the real-browser test of the listening panel (Playwright drives it with
# executable_path; Playwright's own browser download is never used).
[ -x /usr/bin/chromium ] || missing+=(chromium)
# espeak-ng speaks the tests' untranscribed interviews (two voices in turns, English and
# Hungarian) that speech recognition must transcribe and split, and bench_asr.py's recordings.
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
if ((${#missing[@]})) && ! $uv_only; then
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

# 3. uv, pinned, in its own small folder: it installs the lock several times faster than pip.
UV_VERSION=0.13.9
UV=.uv/bin/uv
if [ "$("$UV" --version 2>/dev/null | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  say "installing uv $UV_VERSION into .uv/"
  "$PY" -m venv .uv
  .uv/bin/python -m pip install --quiet "uv==$UV_VERSION" 2> >(grep -v '^WARNING: Location' >&2)
fi

$uv_only && exit 0

# 4. .venv is exactly uv.lock: --locked refuses a lock that no longer matches pyproject.toml
#    ('make lock' re-locks), and sync removes what the lock does not list. A no-op takes a second.
#    --compile-bytecode writes the .pyc files once, at install: where PYTHONDONTWRITEBYTECODE is
#    set (CI images often set it) Python would otherwise compile torch, transformers and the
#    rest from source in every process, 1-2 s per stage kernel and papermill run.
UV_PROJECT_ENVIRONMENT=.venv "$UV" sync --locked --compile-bytecode --python "$PY" --quiet ||
  { echo "voicebook set-up: 'uv sync --locked' failed (see above). If pyproject.toml changed, run 'make lock'." >&2; exit 1; }

# 5. The Jupyter kernel the notebooks, papermill and nbmake use, inside .venv (voicebook.kernel
#    says why it is not ipykernel's own spec).
.venv/bin/python -m voicebook.kernel --install >/dev/null

# 6. Installed == locked, and the libraries the stages load really load (torchaudio's C++
#    library, torchcodec with FFmpeg, coqui's XTTS and trainer, resemblyzer, the kernel).
.venv/bin/python -W ignore scripts/check_environment.py || exit 1
say "ready (.venv = uv.lock, kernel 'voicebook')"
