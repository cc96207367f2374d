# Sourced by the lent-GPU scripts (run from the repo root): the device image has python3 with torch
# but not this package, so its import names are linked into a temporary folder put first on
# PYTHONPATH, behind a carried .gpu/site if present (packages the image lacks). Sets SHIM; the
# caller removes it when done.
SHIM=$(mktemp -d)
ln -s "$PWD/train" "$SHIM/sair_train"
ln -s "$PWD/export" "$SHIM/sair_export"
ln -s "$PWD/sair_deploy" "$SHIM/sair_deploy"
[ -d .gpu/site ] && export PYTHONPATH="$PWD/.gpu/site${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
