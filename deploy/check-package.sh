#!/usr/bin/env bash
# CI's packaging check: builds the Debian package with cargo-deb from the binary the test
# run already built (target/debug/jobu: no second, release build), checks its contents with
# dpkg-deb -c, extracts it into a scratch root with dpkg -x and runs systemd-analyze verify
# (ExecStart resolved inside that root) and an offline security review on the extracted
# units. As root with mount namespaces (CI), it also installs the package with dpkg -i into
# a throwaway overlay of / (the maintainer scripts run, the host is untouched) and runs
# `jobu migrate` there as the jobu user on the packaged config.
#
# Users build a release package with a plain `cargo deb` (README: Deploying with systemd).
set -euo pipefail
cd "$(dirname "$0")/.."

# `--profile dev` is what lets cargo-deb package the debug build; cargo-deb warns that it may
# refuse it some day, so the version is pinned (installed once into ~/.cargo/bin).
CARGO_DEB_VERSION=3.8.0
UNITS=(jobu.service jobu-dispatcher.service jobu-worker.service jobu-admin.service)
# Highest `systemd-analyze security` exposure accepted, in its --threshold scale of 0-100
# (it prints tenths: the units score 1.5 or less, printed "1.5").
EXPOSURE_LIMIT=20

say() { echo "check-package: $*"; }
fail() { echo "check-package: FAILED: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null && [ -d /usr/lib/systemd/system ] ||
  fail "needs systemd-analyze and the standard units (Debian: apt-get install systemd)"
if [ "$(cargo deb --version 2>/dev/null | awk '{print $2}')" != "$CARGO_DEB_VERSION" ]; then
  say "installing cargo-deb $CARGO_DEB_VERSION"
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --quiet
fi

bin=target/debug/jobu
if [ ! -x "$bin" ]; then
  say "no $bin yet: building it"
  cargo build --bin jobu
elif [ -n "$(find src migration -newer "$bin" -name '*.rs' -print -quit)" ]; then
  say "warning: sources are newer than $bin; packaging it anyway (run cargo test first)"
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
deb="$scratch/jobu.deb"
# --fast: the content check does not need xz's smallest archive.
cargo deb --no-build --profile dev --fast --output "$deb" >/dev/null 2>"$scratch/cargo-deb.log" ||
  fail "cargo deb: $(cat "$scratch/cargo-deb.log")"
grep -v -e 'dev profile is not supported' -e 'To enable debug symbols set' "$scratch/cargo-deb.log" || true
[ -s "$deb" ] || fail "cargo deb produced no package"
say "built $(dpkg-deb -f "$deb" Package)_$(dpkg-deb -f "$deb" Version)_$(dpkg-deb -f "$deb" Architecture)"

# Contents: path and mode of every file that must be there.
listing="$scratch/listing"
dpkg-deb -c "$deb" | awk '{ sub(/^\./, "", $6); print $1, $6 }' >"$listing"
expect=("-rwxr-xr-x /usr/bin/jobu" "-rw-r----- /etc/jobu/jobu.env"
        "-rw-r--r-- /usr/share/doc/jobu/copyright" "-rw-r--r-- /usr/share/doc/jobu/PRODUCTION.md")
for unit in "${UNITS[@]}"; do expect+=("-rw-r--r-- /usr/lib/systemd/system/$unit"); done
for file in config/*.yaml; do expect+=("-rw-r--r-- /etc/jobu/${file#config/}"); done
for line in "${expect[@]}"; do
  grep -qxF -- "$line" "$listing" || fail "the package lacks '$line'; it holds:
$(cat "$listing")"
done
control="$scratch/control"
dpkg-deb -e "$deb" "$control"
for script in postinst prerm postrm; do
  [ -x "$control/$script" ] || fail "the package has no $script"
  sh -n "$control/$script" || fail "$script is not valid sh"
done
for file in config/*.yaml jobu.env; do
  grep -qxF "/etc/jobu/${file#config/}" "$control/conffiles" ||
    fail "/etc/jobu/${file#config/} is not a conffile"
done
say "contents: ${#expect[@]} paths, maintainer scripts and conffiles as expected"

# The units as installed: a root holding this host's systemd units (the targets they refer
# to) with the package extracted over them. verify resolves ExecStart inside the root, so a
# missing or misplaced binary fails; it exits 0 on unknown keys, so any output fails too.
root="$scratch/root"
mkdir -p "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
dpkg -x "$deb" "$root"
for unit in "${UNITS[@]}"; do
  cmp -s "deploy/systemd/$unit" "$root/usr/lib/systemd/system/$unit" ||
    fail "the packaged $unit differs from deploy/systemd/$unit"
done
"$root/usr/bin/jobu" --version >/dev/null || fail "the packaged binary does not run"
verify_out=$(cd "$root" && systemd-analyze verify --root="$root" "${UNITS[@]}" 2>&1) ||
  fail "systemd-analyze verify:
$verify_out"
[ -z "$verify_out" ] || fail "systemd-analyze verify warned:
$verify_out"
say "systemd-analyze verify: ${UNITS[*]} clean"
for unit in "${UNITS[@]}"; do
  review=$(systemd-analyze security --offline=yes --root="$root" --threshold="$EXPOSURE_LIMIT" \
    "$unit" 2>&1) || fail "$unit is exposed above $EXPOSURE_LIMIT/100:
$review"
  say "$(tail -n 1 <<<"$review" | sed 's/^→ //')"
done

# A real install with the maintainer scripts, in a throwaway overlay of / (needs root and
# mount namespaces; elsewhere the dpkg -x checks above are all there is).
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
  cp "$deb" "$scratch/install.deb"
  unshare -m bash -s "$scratch" <<'EOF' || fail "dpkg -i into an overlay of / failed"
set -euo pipefail
scratch=$1
# The upper layer on a tmpfs of its own: it must not lie inside the lower one (/).
layers="$scratch/overlay"
mkdir "$layers"
mount -t tmpfs tmpfs "$layers"
mkdir "$layers/upper" "$layers/work" "$layers/merged"
os="$layers/merged"
mount -t overlay overlay -o "lowerdir=/,upperdir=$layers/upper,workdir=$layers/work" "$os"
mount --bind /proc "$os/proc"
mount --bind /dev "$os/dev"
mkdir -p "$os/tmp/pkg" && cp "$scratch/install.deb" "$os/tmp/pkg/"
chroot "$os" bash -euo pipefail -c '
  if getent passwd jobu >/dev/null; then echo "a jobu user exists already: not a fresh install" >&2; fi
  dpkg -i /tmp/pkg/install.deb >/dev/null
  [ "$(stat -c "%U:%G %a" /var/lib/jobu)" = "jobu:jobu 750" ] || { stat /var/lib/jobu; exit 1; }
  [ "$(stat -c "%U:%G %a" /etc/jobu/jobu.env)" = "root:jobu 640" ] || { stat /etc/jobu/jobu.env; exit 1; }
  [ "$(getent passwd jobu | cut -d: -f6,7)" = "/var/lib/jobu:/usr/sbin/nologin" ]
  # As the units run it: the jobu user, /var/lib/jobu, the packaged config.
  cd /var/lib/jobu
  runuser -u jobu -- env JOBU_CONFIG_DIR=/etc/jobu /usr/bin/jobu migrate >/tmp/migrate.log 2>&1 ||
    { cat /tmp/migrate.log >&2; exit 1; }
  [ -s /var/lib/jobu/data/jobu.db ]
  dpkg -i /tmp/pkg/install.deb >/dev/null      # the upgrade path: user kept, scripts rerun
  dpkg --purge jobu >/dev/null 2>&1
  [ ! -e /usr/bin/jobu ] && [ ! -e /etc/jobu ]
  [ -s /var/lib/jobu/data/jobu.db ]            # purge keeps the data (see postrm)
'
EOF
  say "dpkg -i, migrate as jobu, reinstall and purge in an overlay of /: as expected"
else
  say "not root or no mount namespaces: skipped the dpkg -i install"
fi
say "ok"
