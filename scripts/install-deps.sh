#!/usr/bin/env bash
# Installs the Debian packages that Portico's tests and benchmarks run for real:
#
#   redis-server     the shared store of a fleet (contract tests against a real Redis)
#   nginx-light      the reference server in scripts/bench.sh (any nginx flavour will do)
#   chromium         a real browser for the portal pages' tests (run headless)
#   chromium-driver  Debian's chromedriver for that browser (/usr/bin/chromedriver)
#   libssl-dev, pkg-config
#                    what the benchmarks' load generator (oha, built from crates.io by
#                    scripts/bench.sh; the test suite runs its smoke run) links against
#
# Idempotent: what is already installed is skipped, and `apt-get update` runs only when
# something is missing. Everything comes from Debian's archive through apt-get; nothing is
# downloaded from anywhere else (no browser or driver fetched by a tool of its own).
#
# The system services that these packages ship (redis-server, nginx) are never started:
# while apt-get runs, a policy-rc.d forbids starting services, and afterwards the units of
# the packages installed here are disabled. Tests start their own instances on 127.0.0.1
# with their own configuration and ports.
#
#   scripts/install-deps.sh           # install what is missing (as root)
#   scripts/install-deps.sh --check   # only say what is missing (exit 1 if anything is)
#
# Without root or without apt-get it names what is missing and exits 1.
set -euo pipefail

check_only=0
case "${1:-}" in
    "") ;;
    --check) check_only=1 ;;
    -h | --help)
        sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "install-deps.sh: unknown argument '$1' (try --help)" >&2
        exit 2
        ;;
esac

# Whether a Debian package is installed (not merely known or half-removed).
installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

# Whether what a package stands for is present. nginx counts in any flavour (a machine
# that already has `nginx` or `nginx-full` needs no second one).
present() {
    case "$1" in
        nginx-light)
            installed nginx-light || installed nginx || installed nginx-core \
                || installed nginx-full || installed nginx-extras
            ;;
        *) installed "$1" ;;
    esac
}

wanted=(redis-server nginx-light chromium chromium-driver libssl-dev pkg-config)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in "${wanted[@]}"; do
        present "$pkg" || missing+=("$pkg")
    done
else
    missing=("${wanted[@]}")
fi

if ((${#missing[@]} == 0)); then
    echo "install-deps: all present (${wanted[*]})"
    exit 0
fi

if ((check_only)); then
    echo "install-deps: missing: ${missing[*]}" >&2
    exit 1
fi

if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    why="not running as root"
    command -v apt-get >/dev/null 2>&1 || why="apt-get is not available (not a Debian system?)"
    cat >&2 <<EOF
install-deps: missing Debian packages: ${missing[*]}
install-deps: cannot install them: $why.
install-deps: as root on Debian 12, run:  apt-get update && apt-get install --no-install-recommends ${missing[*]}
install-deps: (or run scripts/install-deps.sh as root; it also keeps their services from starting)
EOF
    exit 1
fi

# Forbid service starts while packages are configured (invoke-rc.d and deb-systemd-invoke
# both ask /usr/sbin/policy-rc.d; exit status 101 means "action forbidden"). A policy that
# already forbids everything is left as it is; any other is put back afterwards.
policy=/usr/sbin/policy-rc.d
policy_backup=
policy_ours=0
restore_policy() {
    if ((policy_ours)); then
        if [[ -n $policy_backup ]]; then
            mv -f "$policy_backup" "$policy"
        else
            rm -f "$policy"
        fi
    fi
}
trap restore_policy EXIT
if ! { [[ -x $policy ]] && grep -qx 'exit 101' "$policy"; }; then
    if [[ -e $policy ]]; then
        policy_backup=$(mktemp "$policy.portico-backup.XXXXXX")
        cp -p "$policy" "$policy_backup"
    fi
    printf '#!/bin/sh\n# Written by Portico scripts/install-deps.sh while it installs packages.\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    policy_ours=1
fi

export DEBIAN_FRONTEND=noninteractive
echo "== install-deps: apt-get update (missing: ${missing[*]})"
apt-get update -qq
echo "== install-deps: apt-get install ${missing[*]}"
apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null

# Keep the services of what was just installed from running now or at the next boot.
for pkg in "${missing[@]}"; do
    case "$pkg" in
        redis-server) svc=redis-server ;;
        nginx-light) svc=nginx ;;
        *) continue ;;
    esac
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [[ -x /etc/init.d/$svc ]]; then
        if "/etc/init.d/$svc" status >/dev/null 2>&1; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
done

still=()
for pkg in "${wanted[@]}"; do
    present "$pkg" || still+=("$pkg")
done
if ((${#still[@]})); then
    echo "install-deps: still missing after apt-get install: ${still[*]}" >&2
    exit 1
fi
echo "install-deps: installed ${missing[*]}"
redis-server --version | sed 's/^/  /'
/usr/sbin/nginx -v 2>&1 | sed 's/^/  /'
chromium --version 2>/dev/null | sed 's/^/  /' || true
chromedriver --version 2>/dev/null | sed 's/^/  /' || true
