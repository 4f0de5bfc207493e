#!/usr/bin/env bash
# Installs the Debian packages shoal's dev cluster and tests need, only those missing.
# Must run as root on Debian or Ubuntu; prints one line saying what it did.
set -euo pipefail

packages=(
  docker.io        # dockerd 20.10: one per dev node
  busybox-static   # the busybox image's only binary
  btrfs-progs      # per-node dataset pools
  iproute2         # netns, veth, bridge
  iptables         # the FORWARD rule between node namespaces
  util-linux       # nsenter, unshare, losetup, mount
  etcd-server      # the registry's etcd store
  docker-compose   # the Compose client (1.29, Python)
  docker-registry  # the dev cluster's image registry (CNCF distribution 2.8)
  dnsutils         # dig, for the registry's DNS
  redis-server     # the redis image's binary
  redis-tools      # redis-cli, to talk to it from the host
  python3-venv     # the project's virtualenv
  tmux             # driving interactive `docker run -it` in tests
  facter           # the agent's facts are checked against Facter's own
  curl             # the walkthrough talks to the TODO application
  chromium         # the dashboard's browser tests (headless, driven by Playwright)
)

if [ "$(id -u)" != 0 ]; then
  echo "tools/deps.sh: must run as root (it installs Debian packages); try: sudo make $*" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null; then
  echo "tools/deps.sh: needs apt-get (Debian or Ubuntu); install these by hand: ${packages[*]}" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: all ${#packages[@]} Debian packages present"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Debian's docker.io would try to start a system dockerd; shoal runs its own per node, so keep services down.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.shoal
policy_set=0
if [ ! -e /usr/sbin/policy-rc.d ]; then cp /usr/sbin/policy-rc.d.shoal /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; policy_set=1; fi
rm -f /usr/sbin/policy-rc.d.shoal
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ $policy_set = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
echo "deps: installed ${missing[*]}"
