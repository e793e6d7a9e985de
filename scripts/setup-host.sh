#!/usr/bin/env bash
# Installs what salt-mailha's tests and lab need on a Debian 12 host: the real service packages
# (never started by apt: policy-rc.d blocks that here) and a venv with pinned Salt, this package
# and its lab.
# Idempotent; safe to re-run.  Usage: scripts/setup-host.sh [VENV_DIR]   (default: .venv)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$here/.venv}
export DEBIAN_FRONTEND=noninteractive

debs=(
  python3-venv python3-dev gcc rsync socat pv lsof iproute2 procps psmisc
  mariadb-server mariadb-client galera-4 galera-arbitrator-4 mariadb-backup
  slapd ldap-utils
  bind9 bind9-utils bind9-dnsutils
  keepalived ldirectord liblwp-protocol-https-perl ipvsadm libdbd-mysql-perl iputils-ping arping openssl
  postfix postfix-ldap dovecot-imapd dovecot-pop3d dovecot-ldap dovecot-lmtpd nginx-light
  busybox-static kmod
  debootstrap systemd-container
  patchelf
)
# User-mode Linux (real IPVS: this host kernel has none) is not installed: lab/salt_mailha_lab/uml.py
# downloads Debian testing's user-mode-linux and libc6 into the lab cache and patchelfs it.
missing=()
for p in "${debs[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  # slapd without a system database; postfix without a system config: tests bring their own.
  printf '%s\n' 'slapd slapd/no_configuration boolean true' \
    'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# The exact Salt of CI and the lab (the package itself only requires salt>=3006); the lab is its
# own distribution (lab/), editable too: it reads the formula and examples of this checkout.
"$venv/bin/pip" install -q -c "$here/constraints/salt-3008.txt" -e "$here[tests]" -e "$here/lab"
echo "setup-host: ok (venv $venv)"
