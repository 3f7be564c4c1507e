#!/usr/bin/env bash
# Checks troop's systemd units (deploy/systemd/*.service), as CI runs it:
#
#   deploy/check-units.sh
#
# 1. `systemd-analyze verify` on both units. It runs against a temporary root holding the
#    distribution's units, ours, and a stub for each command our units run, so it never
#    complains that /usr/bin/troop-agent is missing on the CI host. verify may print a
#    warning and still exit 0: any line about our units fails the check, and so does any
#    other line saying Unknown, Failed, Invalid, bad or not found.
# 2. `systemd-analyze security --offline=yes` on each unit: the overall exposure level
#    must not exceed the threshold below. Lowering exposure never fails; raising it means
#    raising the threshold here, on purpose, with the reason in docs/systemd.md.
#
# Needs bash and systemd-analyze (systemd 252 or later); not root. Works from any
# directory. Exit codes: 0 both units pass, 1 a check failed, 2 cannot run the checks.
set -euo pipefail

# Measured with systemd 252 (Debian 12), rounded up to the next 0.5 (docs/systemd.md).
AGENT_MAX_EXPOSURE=3.0
COORDINATOR_MAX_EXPOSURE=1.5

cd "$(dirname "$0")"
units_dir=$PWD/systemd
units=(troop-agent.service troop-coordinator.service)

say() { printf '%s\n' "$*"; }
fail_setup() {
    printf 'check-units: %s\n' "$*" >&2
    exit 2
}

command -v systemd-analyze >/dev/null || fail_setup "systemd-analyze not found (apt-get install systemd)"
for unit in "${units[@]}"; do
    [ -f "$units_dir/$unit" ] || fail_setup "missing $units_dir/$unit"
done
# Plain output: no colours, no pager, "->" instead of the arrow is fine too.
export SYSTEMD_COLORS=0 SYSTEMD_PAGER=cat
say "systemd-analyze: $(systemd-analyze --version | head -n 1)"

failed=0
problem() {
    printf 'FAIL: %s\n' "$*"
    failed=1
}

# --- 1. verify ------------------------------------------------------------------------

root=$(mktemp -d "${TMPDIR:-/tmp}/troop-check-units.XXXXXX")
trap 'rm -rf -- "$root"' EXIT

# A merged-/usr root, so that absolute symlinks among the distribution's units resolve.
mkdir -p "$root/usr/lib/systemd/system" "$root/usr/bin" "$root/usr/sbin" "$root/etc/systemd/system"
ln -s usr/lib "$root/lib"
ln -s usr/bin "$root/bin"
ln -s usr/sbin "$root/sbin"
# The distribution's units: the targets ours are ordered against and pulled in by.
copied=
for dir in /lib/systemd/system /usr/lib/systemd/system; do
    [ -d "$dir" ] || continue
    real=$(readlink -f "$dir")
    case " $copied " in *" $real "*) continue ;; esac
    cp -a "$real/." "$root/usr/lib/systemd/system/"
    copied="$copied $real"
done
[ -n "$copied" ] || fail_setup "no systemd unit directory (/lib/systemd/system) on this host"
cp "${units[@]/#/$units_dir/}" "$root/etc/systemd/system/"

# A stub for each command the units run: troop's own binaries always; any other command
# only if this host has it, so that a mistyped path is still reported.
while IFS= read -r command; do
    case $command in
        /usr/bin/troop | /usr/bin/troop-agent) ;;
        *) [ -x "$command" ] || continue ;;
    esac
    mkdir -p "$root$(dirname -- "$command")"
    printf '#!/bin/sh\nexit 0\n' >"$root$command"
    chmod 0755 "$root$command"
done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\([^ ]*\).*/\1/p' "${units[@]/#/$units_dir/}" | sort -u)

verify_status=0
verify_output=$(systemd-analyze verify --root="$root" --man=no "${units[@]}" 2>&1) || verify_status=$?
# Name our files as the repository does, not by their temporary copies.
verify_output=${verify_output//"$root/etc/systemd/system/"/deploy/systemd/}
if [ "$verify_status" -ne 0 ]; then
    problem "systemd-analyze verify exited $verify_status"
fi
unit_pattern='troop-agent\.service|troop-coordinator\.service'
warning_pattern='unknown|failed|invalid|bad|not found|not executable'
while IFS= read -r line; do
    [ -n "$line" ] || continue
    if printf '%s\n' "$line" | grep -Eq "$unit_pattern"; then
        problem "verify: $line"
    elif printf '%s\n' "$line" | grep -Eiq "$warning_pattern"; then
        problem "verify (a unit ours depend on): $line"
    else
        say "verify note: $line"
    fi
done <<<"$verify_output"
if [ "$verify_status" -eq 0 ] && [ "$failed" -eq 0 ]; then
    say "verify: ${units[*]}: no warnings"
fi

# --- 2. exposure ----------------------------------------------------------------------

# exposure UNIT: prints the overall exposure level systemd-analyze security reports.
exposure() {
    local unit=$1 output status=0
    output=$(systemd-analyze security --offline=yes --no-pager "$units_dir/$unit" 2>&1) || status=$?
    if [ "$status" -ne 0 ]; then
        printf '%s\n' "$output" >&2
        return 1
    fi
    # "→ Overall exposure level for troop-agent.service: 2.7 OK 🙂"
    printf '%s\n' "$output" |
        sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9]*\(\.[0-9]*\)\{0,1\}\).*/\1/p' |
        tail -n 1
}

check_exposure() {
    local unit=$1 max=$2 level
    if ! level=$(exposure "$unit") || [ -z "$level" ]; then
        problem "$unit: systemd-analyze security gave no overall exposure level"
        return 0
    fi
    if awk -v level="$level" -v max="$max" 'BEGIN { exit !(level + 0 <= max + 0) }'; then
        say "exposure: $unit $level (threshold $max): ok"
    else
        problem "exposure: $unit $level is above its threshold $max; see: systemd-analyze security --offline=yes deploy/systemd/$unit"
    fi
}

check_exposure troop-agent.service "$AGENT_MAX_EXPOSURE"
check_exposure troop-coordinator.service "$COORDINATOR_MAX_EXPOSURE"

if [ "$failed" -ne 0 ]; then
    say "check-units: FAILED"
    exit 1
fi
say "check-units: ok"
