#!/usr/bin/env bash
# Install portraitrig into ./.venv (or the active virtual environment).
#   bash scripts/install.sh          # the package with capture, diffusion, eval and web extras
#   bash scripts/install.sh --test   # ... plus the test extras and, as root on Debian / Ubuntu, the
#                                    # chromium package the web app's browser tests drive
# Environment: PYTHON (interpreter to create .venv with, default python3),
#              TORCH_SPEC (what to install when torch is missing, default torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
browser=0
extras="capture,diffusion,eval,web"
for arg in "$@"; do
  case "$arg" in
    --test) extras="$extras,test"; browser=1 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ -n "${VIRTUAL_ENV:-}" ]; then
  py=python
else
  [ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
  py=.venv/bin/python
fi
pip() { "$py" -m pip --disable-pip-version-check "$@"; }
# torch first, so that nothing below pulls a different (multi-GB CUDA) build
"$py" -c "import torch" 2>/dev/null || pip install -q "${TORCH_SPEC:-torch==2.13.0}"
# mediapipe 0.10.14 carries Face Mesh (+ iris) and face detection weights in its wheel. Its
# declared dependencies pull jax/jaxlib (~740 MB) and a second OpenCV that Face Mesh never
# imports, so it is installed without them; what it really imports is the `capture` extra.
pip install -q --no-deps "mediapipe==0.10.14"
pip install -q -e ".[$extras]"
"$py" -c "import portraitrig, mediapipe, torch; print('portraitrig', portraitrig.__version__, '| torch', torch.__version__, '| mediapipe', mediapipe.__version__)"
# the browser the web app's tests drive (Playwright's own browser download is not used): Debian's
# chromium, when it is missing and this is root on a system with apt
if [ "$browser" = 1 ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }) \
      && echo "chromium $(chromium --version 2>/dev/null | awk '{print $2}') installed for the browser tests" \
      || echo "warning: could not install chromium: the web app's browser tests will be skipped" >&2
  else
    echo "warning: no chromium (install it, e.g. apt-get install chromium): the web app's browser tests will be skipped" >&2
  fi
fi
