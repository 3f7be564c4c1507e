#!/usr/bin/env bash
# Installs troop on a systemd host: the agent (troop-agent, on every host) and/or the
# coordinator (troop, whose `troop serve` runs as a daemon, on one host).
#
#   install.sh [--agent] [--coordinator] [--bin-dir DIR] [--no-start]
#   install.sh --uninstall [--purge] [--agent] [--coordinator]
#
# Idempotent: a second run changes nothing, and an existing config or key is never
# overwritten. Everything lands under $DESTDIR when it is set (a staging tree: then no
# user is created, nothing is chowned and no service is touched). What it installed is
# listed in $DESTDIR/var/lib/troop-install/manifest, one path per line, which is what
# --uninstall removes. See docs/fleet-guide.md.
set -euo pipefail

readonly BIN_DIR=/usr/bin
readonly UNIT_DIR=/lib/systemd/system
readonly ETC_DIR=/etc/troop
readonly AGENT_CONFIG=$ETC_DIR/agent.toml
readonly COORD_CONFIG=$ETC_DIR/troop.toml
readonly CAMPAIGNS_DIR=$ETC_DIR/campaigns
readonly AGENT_STATE=/var/lib/troop-agent
readonly FILL_DIR=/var/tmp/troop
readonly COORD_STATE=/var/lib/troop
readonly COORD_USER=troop
readonly MANIFEST_DIR=/var/lib/troop-install
readonly MANIFEST=$MANIFEST_DIR/manifest
readonly AGENT_UNIT=troop-agent.service
readonly COORD_UNIT=troop-coordinator.service

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)
readonly script_dir

usage() {
    cat <<'EOF'
usage: install.sh [--agent] [--coordinator] [--bin-dir DIR] [--no-start]
                  [--enroll URL --ca-sha256 HEX [--policy FILE]]
       install.sh --uninstall [--purge] [--agent] [--coordinator]

Installs troop-agent (the default) and/or the coordinator (--coordinator: /usr/bin/troop,
troop-coordinator.service, a `troop` system user, /var/lib/troop, /etc/troop/troop.toml).

  --agent          install (or uninstall) the agent; the default when no role is named
  --coordinator    install (or uninstall) the coordinator
  --bin-dir DIR    where troop-agent and troop are (default: ../target/release beside
                   this script if it exists, else the current directory)
  --no-start       do not run systemctl (enable, start, restart)
  --enroll URL     join the fleet through troop serve at URL instead of writing the
                   skeleton config: `troop-agent enroll` makes this host's key, and writes
                   its certificate, ca.pem, the trusted signing keys and agent.toml; the
                   join token comes from $TROOP_JOIN_TOKEN (kept out of `ps`)
  --ca-sha256 HEX  with --enroll: the fleet CA's fingerprint, as `troop pki join-token`
                   prints it
  --policy FILE    with --enroll: this host's [policy] table for agent.toml
  --uninstall      stop and disable the services, remove the binaries and units this
                   script installed (every role it installed unless a role is named);
                   configs, keys and state are kept
  --purge          with --uninstall: also remove state dirs and configs, and /etc/troop
                   once no role is left (never a directory holding ca.key or signing.key)

Honours DESTDIR. Exit codes: 0 done, 1 failed, 2 usage error.
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'install.sh: %s\n' "$*" >&2; }
usage_error() {
    warn "$*"
    warn "try: install.sh --help"
    exit 2
}
fail() {
    warn "$*"
    exit 1
}

want_agent=0
want_coord=0
bin_dir=
start=1
uninstall=0
purge=0
enroll_url=
ca_sha256=
policy_file=
while [ $# -gt 0 ]; do
    case $1 in
        --enroll | --ca-sha256 | --policy)
            [ $# -ge 2 ] || usage_error "$1 needs a value"
            case $1 in
                --enroll) enroll_url=$2 ;;
                --ca-sha256) ca_sha256=$2 ;;
                --policy) policy_file=$2 ;;
            esac
            shift
            ;;
        --agent) want_agent=1 ;;
        --coordinator) want_coord=1 ;;
        --bin-dir)
            [ $# -ge 2 ] || usage_error "--bin-dir needs a directory"
            bin_dir=$2
            shift
            ;;
        --bin-dir=*) bin_dir=${1#--bin-dir=} ;;
        --no-start) start=0 ;;
        --uninstall) uninstall=1 ;;
        --purge) purge=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *) usage_error "unknown argument: $1" ;;
    esac
    shift
done
if [ "$purge" -eq 1 ] && [ "$uninstall" -eq 0 ]; then
    usage_error "--purge only goes with --uninstall"
fi
if [ -n "$enroll_url" ]; then
    [ "$uninstall" -eq 0 ] || usage_error "--enroll only goes with an install"
    want_agent=1
    # DESTDIR stages files for another host; enrolment makes this host's key.
    [ -z "${DESTDIR:-}" ] || usage_error "--enroll makes this host's key: run it on the host, without DESTDIR"
    [ -n "$ca_sha256" ] || usage_error "--enroll needs --ca-sha256 (from troop pki join-token)"
    [ -n "${TROOP_JOIN_TOKEN:-}" ] || usage_error "--enroll needs the join token in TROOP_JOIN_TOKEN"
elif [ -n "$ca_sha256" ] || [ -n "$policy_file" ]; then
    usage_error "--ca-sha256 and --policy only go with --enroll"
fi

destdir=${DESTDIR:-}
if [ -n "$destdir" ]; then
    case $destdir in
        /*) ;;
        *) destdir=$PWD/$destdir ;;
    esac
    destdir=${destdir%/}
fi
readonly destdir

if [ -z "$destdir" ] && [ "$(id -u)" -ne 0 ]; then
    fail "run as root (or set DESTDIR to install into a staging tree)"
fi

# systemctl is only ever run on the real system, with systemd as its init.
can_systemctl() {
    [ -z "$destdir" ] && [ "$start" -eq 1 ] && [ -d /run/systemd/system ]
}

why_no_systemctl() {
    if [ -n "$destdir" ]; then
        say "DESTDIR is set"
    elif [ "$start" -eq 0 ]; then
        say "--no-start"
    else
        say "systemd is not running here"
    fi
}

# --- the manifest: target paths (without DESTDIR) this script manages ---------------

declare -A manifest=()

load_manifest() {
    local line
    if [ -f "$destdir$MANIFEST" ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            if [ -n "$line" ]; then
                manifest[$line]=1
            fi
        done <"$destdir$MANIFEST"
    fi
    return 0
}

record() { manifest[$1]=1; }
forget() { unset "manifest[$1]"; }

tmp_file=
work_dir=
cleanup() {
    if [ -n "$tmp_file" ]; then
        rm -f -- "$tmp_file"
    fi
    if [ -n "$work_dir" ]; then
        rm -rf -- "$work_dir"
    fi
}
trap cleanup EXIT

# Writes the manifest only when its content changes; removes it once it lists nothing.
save_manifest() {
    local target=$destdir$MANIFEST
    if [ "${#manifest[@]}" -eq 0 ]; then
        if [ -e "$target" ]; then
            rm -f -- "$target"
            rmdir -- "$destdir$MANIFEST_DIR" 2>/dev/null || true
            say "removed   $MANIFEST"
        fi
        return 0
    fi
    mkdir -p -- "$destdir$MANIFEST_DIR"
    chmod 0755 "$destdir$MANIFEST_DIR"
    tmp_file=$(mktemp "$target.XXXXXX")
    printf '%s\n' "${!manifest[@]}" | LC_ALL=C sort >"$tmp_file"
    if [ -f "$target" ] && cmp -s -- "$tmp_file" "$target"; then
        rm -f -- "$tmp_file"
    else
        chmod 0644 "$tmp_file"
        mv -f -- "$tmp_file" "$target"
        say "recorded  $MANIFEST"
    fi
    tmp_file=
}

# agent, coordinator or shared: which role a managed path belongs to.
role_of() {
    case $1 in
        "$BIN_DIR/troop-agent" | "$UNIT_DIR/$AGENT_UNIT" | "$AGENT_CONFIG" | "$AGENT_STATE" | "$FILL_DIR")
            say agent
            ;;
        "$BIN_DIR/troop" | "$UNIT_DIR/$COORD_UNIT" | "$COORD_CONFIG" | "$CAMPAIGNS_DIR" | "$COORD_STATE")
            say coordinator
            ;;
        *) say shared ;;
    esac
}

# --- small idempotent steps --------------------------------------------------------

mode_of() { stat -c %a -- "$1"; }

# ensure_dir PATH MODE: the directory exists with exactly MODE.
ensure_dir() {
    local path=$1 mode=$2
    local target=$destdir$path
    if [ -d "$target" ]; then
        if [ "$(mode_of "$target")" != "${mode#0}" ]; then
            chmod "$mode" "$target"
            say "chmod     $path $mode"
        fi
    else
        mkdir -p -- "$(dirname -- "$target")"
        mkdir -m "$mode" -- "$target"
        say "created   $path ($mode)"
    fi
    record "$path"
}

# ensure_owner PATH USER:GROUP, on the real system only.
ensure_owner() {
    local path=$1 owner=$2
    [ -z "$destdir" ] || return 0
    if [ "$(stat -c %U:%G -- "$path")" != "$owner" ]; then
        chown "$owner" "$path"
        say "chown     $path $owner"
    fi
}

# install_file SRC PATH MODE: copies SRC to PATH (atomically) unless it is already there;
# sets `changed` to 1 when the content changed.
changed=0
install_file() {
    local src=$1 path=$2 mode=$3
    local target=$destdir$path
    if [ -f "$target" ] && cmp -s -- "$src" "$target"; then
        if [ "$(mode_of "$target")" != "${mode#0}" ]; then
            chmod "$mode" "$target"
            say "chmod     $path $mode"
        else
            say "unchanged $path"
        fi
    else
        mkdir -p -- "$(dirname -- "$target")"
        tmp_file=$(mktemp "$target.XXXXXX")
        cp -- "$src" "$tmp_file"
        chmod "$mode" "$tmp_file"
        # A rename, so a running binary is never written to and nobody sees half a file.
        mv -f -- "$tmp_file" "$target"
        tmp_file=
        say "installed $path ($mode)"
        changed=1
    fi
    record "$path"
}

# install_config SRC PATH MODE: writes a config only when PATH does not exist yet;
# sets `wrote` to 1 when it did.
wrote=0
install_config() {
    local src=$1 path=$2 mode=$3
    local target=$destdir$path
    wrote=0
    if [ -e "$target" ]; then
        say "kept      $path (exists, not overwritten)"
    else
        tmp_file=$(mktemp "$target.XXXXXX")
        cat -- "$src" >"$tmp_file"
        chmod "$mode" "$tmp_file"
        mv -f -- "$tmp_file" "$target"
        tmp_file=
        say "wrote     $path ($mode) from $(basename -- "$src")"
        wrote=1
    fi
    record "$path"
}

# enroll_agent: joins the fleet with troop-agent enroll, unless a config is there already.
# The agent's key and certificate go to its state dir, where serve's renewals replace them.
enroll_agent() {
    if [ -e "$destdir$AGENT_CONFIG" ]; then
        say "kept      $AGENT_CONFIG (exists; not enrolling again)"
    else
        local args=(--config "$destdir$AGENT_CONFIG" enroll --coordinator "$enroll_url"
            --ca-sha256 "$ca_sha256" --state-dir "$AGENT_STATE")
        if [ -n "$policy_file" ]; then
            args+=(--policy "$policy_file")
        fi
        "$destdir$BIN_DIR/troop-agent" "${args[@]}" || fail "enrolment refused; nothing was configured"
        say "enrolled  through $enroll_url: wrote $AGENT_CONFIG"
    fi
    record "$AGENT_CONFIG"
}

# The coordinator's starting config: the example, with its SQLite store moved from
# beside the config (/etc/troop, read-only to the service) to the state dir.
coordinator_config_template() {
    sed "s|^url = \"sqlite://troop.db\"|url = \"sqlite://$COORD_STATE/troop.db\"|" \
        "$script_dir/examples/troop.toml"
}

# --- install -----------------------------------------------------------------------

do_install() {
    if [ "$want_agent" -eq 0 ] && [ "$want_coord" -eq 0 ]; then
        want_agent=1
    fi
    if [ -z "$bin_dir" ]; then
        if [ -d "$script_dir/../target/release" ]; then
            bin_dir=$script_dir/../target/release
        else
            bin_dir=$PWD
        fi
    fi
    [ -d "$bin_dir" ] || fail "--bin-dir $bin_dir is not a directory"

    # Check every source before touching anything.
    local needed=()
    if [ "$want_agent" -eq 1 ]; then
        needed+=("$bin_dir/troop-agent" "$script_dir/systemd/$AGENT_UNIT" "$script_dir/agent.toml.skeleton")
    fi
    if [ "$want_coord" -eq 1 ]; then
        needed+=("$bin_dir/troop" "$script_dir/systemd/$COORD_UNIT" "$script_dir/examples/troop.toml")
    fi
    local file
    for file in "${needed[@]}"; do
        [ -f "$file" ] || fail "missing $file (build with: cargo build --release; or pass --bin-dir)"
    done
    for file in "$bin_dir/troop-agent" "$bin_dir/troop"; do
        if [ -f "$file" ] && [ ! -x "$file" ]; then
            fail "$file is not executable"
        fi
    done

    load_manifest
    if [ -n "$destdir" ]; then
        say "installing into DESTDIR=$destdir"
    fi

    if [ "$want_coord" -eq 1 ] && [ -z "$destdir" ]; then
        if id -u "$COORD_USER" >/dev/null 2>&1; then
            say "exists    user $COORD_USER"
        else
            useradd --system --user-group --home "$COORD_STATE" --shell /usr/sbin/nologin "$COORD_USER"
            say "created   user $COORD_USER"
        fi
    fi

    ensure_dir "$ETC_DIR" 0750

    local agent_changed=0 coord_changed=0
    if [ "$want_agent" -eq 1 ]; then
        changed=0
        install_file "$bin_dir/troop-agent" "$BIN_DIR/troop-agent" 0755
        install_file "$script_dir/systemd/$AGENT_UNIT" "$UNIT_DIR/$AGENT_UNIT" 0644
        agent_changed=$changed
        ensure_dir "$AGENT_STATE" 0700
        if [ -n "$enroll_url" ]; then
            enroll_agent
        else
            install_config "$script_dir/agent.toml.skeleton" "$AGENT_CONFIG" 0640
        fi
        ensure_dir "$FILL_DIR" 0700
    fi
    if [ "$want_coord" -eq 1 ]; then
        changed=0
        install_file "$bin_dir/troop" "$BIN_DIR/troop" 0755
        install_file "$script_dir/systemd/$COORD_UNIT" "$UNIT_DIR/$COORD_UNIT" 0644
        coord_changed=$changed
        # The service runs as $COORD_USER: it reads /etc/troop, writes only its state dir.
        ensure_owner "$ETC_DIR" "root:$COORD_USER"
        ensure_dir "$COORD_STATE" 0700
        ensure_owner "$COORD_STATE" "$COORD_USER:$COORD_USER"
        ensure_dir "$CAMPAIGNS_DIR" 0750
        ensure_owner "$CAMPAIGNS_DIR" "root:$COORD_USER"
        work_dir=$(mktemp -d)
        coordinator_config_template >"$work_dir/troop.toml"
        install_config "$work_dir/troop.toml" "$COORD_CONFIG" 0640
        # Readable by the service; an existing config's owner is the operator's business.
        if [ "$wrote" -eq 1 ]; then
            ensure_owner "$COORD_CONFIG" "root:$COORD_USER"
        fi
    fi
    save_manifest

    local status=0
    if ! can_systemctl; then
        say "not running systemctl: $(why_no_systemctl)"
    else
        systemctl daemon-reload
        say "ran       systemctl daemon-reload"
        if [ "$want_agent" -eq 1 ]; then
            local problem
            # Like the .deb: a host without its certificate and keys is not enabled yet.
            if problem=$("$BIN_DIR/troop-agent" validate --config "$AGENT_CONFIG" 2>&1); then
                start_unit troop-agent "$agent_changed" || status=1
            else
                say "not enabling troop-agent yet: $problem"
                say "          put this host's files in $ETC_DIR and fill in $AGENT_CONFIG"
                say "          (docs/fleet-guide.md), then: systemctl enable --now troop-agent"
            fi
        fi
        if [ "$want_coord" -eq 1 ]; then
            if coordinator_config_template | cmp -s - "$COORD_CONFIG"; then
                say "not enabling troop-coordinator yet: $COORD_CONFIG is still the example"
                say "          edit it (docs/fleet-guide.md), then: systemctl enable --now troop-coordinator"
            else
                start_unit troop-coordinator "$coord_changed" || status=1
            fi
        fi
    fi
    if [ "$want_agent" -eq 1 ] && grep -q 'change-me' "$destdir$AGENT_CONFIG"; then
        say "note: $AGENT_CONFIG still holds change-me placeholders"
    fi
    return "$status"
}

# start_unit NAME CHANGED: enable and start; restart when it runs an older binary or unit.
start_unit() {
    local name=$1 was_changed=$2
    if [ "$was_changed" -eq 1 ] && systemctl is-active --quiet "$name"; then
        systemctl enable "$name"
        if systemctl restart "$name"; then
            say "restarted $name (new binary or unit)"
            return 0
        fi
    elif systemctl enable --now "$name"; then
        say "ran       systemctl enable --now $name"
        return 0
    fi
    warn "$name did not start; see: journalctl -u $name"
    return 1
}

# --- uninstall ---------------------------------------------------------------------

# role_in_manifest ROLE: this script installed something of ROLE that is still there.
role_in_manifest() {
    local role=$1 path
    for path in "${!manifest[@]}"; do
        if [ "$(role_of "$path")" = "$role" ]; then
            return 0
        fi
    done
    return 1
}

# role_present ROLE: ROLE is installed here, by this script or otherwise (a .deb).
role_present() {
    local role=$1
    if role_in_manifest "$role"; then
        return 0
    fi
    case $role in
        agent) [ -e "$destdir$BIN_DIR/troop-agent" ] ;;
        *) [ -e "$destdir$BIN_DIR/troop" ] ;;
    esac
}

remove_path() {
    local path=$1
    local target=$destdir$path
    if [ -d "$target" ] && [ ! -L "$target" ]; then
        rm -rf -- "$target"
        say "removed   $path/"
    elif [ -e "$target" ] || [ -L "$target" ]; then
        rm -f -- "$target"
        say "removed   $path"
    fi
    forget "$path"
}

do_uninstall() {
    load_manifest
    local roles=()
    local role
    for role in agent coordinator; do
        if [ "$role" = agent ] && [ "$want_agent" -eq 1 ]; then
            roles+=(agent)
        elif [ "$role" = coordinator ] && [ "$want_coord" -eq 1 ]; then
            roles+=(coordinator)
        elif [ "$want_agent" -eq 0 ] && [ "$want_coord" -eq 0 ] && role_in_manifest "$role"; then
            roles+=("$role")
        fi
    done
    if [ "${#roles[@]}" -eq 0 ]; then
        say "nothing to uninstall: no manifest at $destdir$MANIFEST"
        return 0
    fi
    if [ -n "$destdir" ]; then
        say "uninstalling from DESTDIR=$destdir"
    fi

    local unit path removed_unit=0
    for role in "${roles[@]}"; do
        case $role in
            agent) unit=troop-agent ;;
            coordinator) unit=troop-coordinator ;;
        esac
        # Only a unit this script installed (not a .deb's). Stopping the agent reverts
        # every fault it holds (SIGTERM).
        if can_systemctl && [ -n "${manifest[$UNIT_DIR/$unit.service]:-}" ]; then
            if systemctl disable --now "$unit"; then
                say "ran       systemctl disable --now $unit"
            else
                warn "could not stop $unit; removing it anyway"
            fi
        fi
        for path in "${!manifest[@]}"; do
            [ "$(role_of "$path")" = "$role" ] || continue
            case $path in
                "$BIN_DIR"/* | "$UNIT_DIR"/*)
                    remove_path "$path"
                    if [[ $path == "$UNIT_DIR"/* ]]; then
                        removed_unit=1
                    fi
                    ;;
            esac
        done
    done
    if [ "$removed_unit" -eq 1 ] && can_systemctl; then
        systemctl daemon-reload
        say "ran       systemctl daemon-reload"
    fi

    if [ "$purge" -eq 1 ]; then
        for role in "${roles[@]}"; do
            case $role in
                agent)
                    remove_path "$AGENT_CONFIG"
                    remove_path "$AGENT_STATE"
                    remove_path "$FILL_DIR"
                    ;;
                coordinator)
                    remove_path "$COORD_CONFIG"
                    remove_path "$CAMPAIGNS_DIR"
                    remove_path "$COORD_STATE"
                    ;;
            esac
        done
        purge_etc
    else
        say "kept      $ETC_DIR (configs and keys) and the state dirs; --purge removes them"
    fi
    save_manifest
}

# /etc/troop goes only when no role is left, and never with the fleet's secrets in it.
purge_etc() {
    local role
    for role in agent coordinator; do
        if role_present "$role"; then
            say "kept      $ETC_DIR (the $role still uses it)"
            return 0
        fi
    done
    local target=$destdir$ETC_DIR
    if [ -d "$target" ]; then
        local secrets
        secrets=$(find "$target" \( -name ca.key -o -name signing.key \) -print)
        if [ -n "$secrets" ]; then
            warn "kept $ETC_DIR: it holds the fleet's CA or signing key:"
            warn "$secrets"
            warn "move them somewhere safe, or remove $ETC_DIR by hand if you mean it"
            forget "$ETC_DIR"
            return 0
        fi
    fi
    remove_path "$ETC_DIR"
}

if [ "$uninstall" -eq 1 ]; then
    do_uninstall
else
    do_install
fi
