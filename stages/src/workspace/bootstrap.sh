#!/bin/sh
# sagemaker-executor bootstrap: runs one CI stage script inside a SageMaker training container
# or an ECS task.
#
#   sh bootstrap.sh <channel dir>
#
# The channel dir holds workspace.tar.gz (the job's project dir and its .tmp sibling, member
# names = absolute paths without the leading '/'), script (the runner's stage script), this file
# and job.env. Steps: restore the workspace at the same absolute path, run the script from the
# project dir, pack the workspace back, exit with the script's status.
#
# Portability: POSIX sh only (dash and busybox ash included), and only sh, tar and gzip (GNU or
# busybox) are required; ls is used for byte counts when present.
#
# Why things are done the way they are:
# - job.env is parsed line by line and never sourced, so its values cannot run code.
# - tar -o (GNU: --no-same-owner, busybox: don't restore user:group) because a root tar would
#   otherwise give the files to whatever uid the archive names.
# - The script runs in the background and the shell waits for it, because a shell only runs a
#   trap between commands: this is what lets SIGTERM (StopTrainingJob, ECS StopTask) be
#   forwarded while the script runs. When this shell leads its process group (as PID 1 of a
#   container does) the signal goes to the whole group, so the script's own children get it
#   too; dash and busybox cannot start a job in a group of its own without a terminal.
# - After a SIGTERM the workspace is still packed (SageMaker uploads the output dir after the
#   container exits), then the exit status is 143.
# - SageMaker gzips /opt/ml/output/data itself, so the SageMaker mode writes an uncompressed
#   workspace.tar; the ECS mode writes workspace.tar.gz for the helper container to upload.
# - SageMaker itself sets no SM_* variables: the SageMaker training toolkit inside framework
#   images does, and this bootstrap replaces the toolkit's entry point. So the SageMaker mode
#   exports the toolkit's training environment itself (see "SageMaker training environment"
#   below), before the script runs, so the script can still override any of it.

set -u
set -f

say() {
    printf '[sagemaker-executor] %s\n' "$*"
}

# Our own variables must not reach the script through the environment.
unset SME_PROJECT_DIR SME_MODE SME_OUTPUT_DIR SME_FAILURE_FILE SME_ML_ROOT
SME_PROJECT_DIR=
SME_MODE=sagemaker
SME_OUTPUT_DIR=
SME_FAILURE_FILE=
# Where SageMaker mounts /opt/ml; only tests move it (job.env key SME_ML_ROOT).
SME_ML_ROOT=/opt/ml

write_failure() {
    [ -n "$SME_FAILURE_FILE" ] || return 0
    failure_dir=${SME_FAILURE_FILE%/*}
    if [ -n "$failure_dir" ]; then
        mkdir -p "$failure_dir" 2>/dev/null
    fi
    printf 'sagemaker-executor: %s\n' "$1" >"$SME_FAILURE_FILE" ||
        say "cannot write the failure reason to $SME_FAILURE_FILE"
}

die() {
    say "error: $1"
    write_failure "$1"
    exit 1
}

size_of() {
    if command -v ls >/dev/null 2>&1; then
        # shellcheck disable=SC2046 # word splitting is the point; globbing is off (set -f)
        set -- $(ls -ln "$1" 2>/dev/null)
        if [ $# -ge 5 ]; then
            printf '%s bytes' "$5"
            return 0
        fi
    fi
    printf 'size unknown'
}

channel=${1:-}
[ -n "$channel" ] || die "usage: bootstrap.sh <channel dir>"
channel=${channel%/}
[ -r "$channel/job.env" ] || die "$channel/job.env is missing"

while IFS= read -r line || [ -n "$line" ]; do
    case $line in
        SME_PROJECT_DIR=*) SME_PROJECT_DIR=${line#*=} ;;
        SME_MODE=*) SME_MODE=${line#*=} ;;
        SME_OUTPUT_DIR=*) SME_OUTPUT_DIR=${line#*=} ;;
        SME_FAILURE_FILE=*) SME_FAILURE_FILE=${line#*=} ;;
        SME_ML_ROOT=?*) SME_ML_ROOT=${line#*=} ;;
        *) ;; # blank lines, comments, keys of newer executors
    esac
done <"$channel/job.env"

case $SME_MODE in
    sagemaker)
        : "${SME_OUTPUT_DIR:=/opt/ml/output/data}"
        : "${SME_FAILURE_FILE:=/opt/ml/output/failure}"
        returned=workspace.tar
        ;;
    ecs)
        returned=workspace.tar.gz
        ;;
    *)
        die "unknown SME_MODE '$SME_MODE' in job.env"
        ;;
esac
[ -n "$SME_OUTPUT_DIR" ] || die "SME_OUTPUT_DIR is not set in job.env"

SME_PROJECT_DIR=${SME_PROJECT_DIR%/}
case $SME_PROJECT_DIR in
    /?*) ;;
    *) die "SME_PROJECT_DIR '$SME_PROJECT_DIR' is not an absolute path below /" ;;
esac
case $SME_PROJECT_DIR/ in
    */../* | */./*) die "SME_PROJECT_DIR '$SME_PROJECT_DIR' contains . or .. components" ;;
esac
project_member=${SME_PROJECT_DIR#/}

# --- SIGTERM handling -------------------------------------------------------------------------
leader=0
if [ -r "/proc/$$/stat" ]; then
    stat_line=
    read -r stat_line <"/proc/$$/stat" || true
    # Fields after "pid (comm) " are: state ppid pgrp ...; comm may contain spaces.
    # shellcheck disable=SC2086 # word splitting is the point; globbing is off (set -f)
    set -- ${stat_line##*) }
    if [ "${3:-}" = "$$" ]; then
        leader=1
    fi
fi

terminated=0
child=

forward_term() {
    if [ "$leader" = 1 ]; then
        # Our whole process group: the script and everything it started. We ignore it ourselves.
        kill -s TERM 0 2>/dev/null
    else
        kill -s TERM "$child" 2>/dev/null
    fi
}

# shellcheck disable=SC2317 # called through the trap below
on_term() {
    terminated=1
    trap '' TERM
    say "SIGTERM received: stopping the script"
    if [ -n "$child" ]; then
        forward_term
    fi
}
trap on_term TERM

# --- restore ----------------------------------------------------------------------------------
archive=$channel/workspace.tar.gz
[ -f "$archive" ] || die "restoring the workspace failed: $archive is missing"
say "restoring the workspace into $SME_PROJECT_DIR from $archive ($(size_of "$archive"))"
tar -xzof "$archive" -C / || die "restoring the workspace failed (tar exited with status $?)"
if [ ! -d "$SME_PROJECT_DIR" ]; then
    mkdir -p "$SME_PROJECT_DIR" || die "cannot create $SME_PROJECT_DIR"
fi
say "restored the workspace"

# --- SageMaker training environment ----------------------------------------------------------
# The SageMaker training toolkit exports these before it runs a user entry point, derived from
# the files SageMaker writes to /opt/ml/input/config and from the machine
# (sagemaker_training.environment.Environment.to_env_vars): SM_MODEL_DIR, SM_INPUT_DIR,
# SM_INPUT_CONFIG_DIR, SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR, SM_OUTPUT_INTERMEDIATE_DIR,
# SM_CHANNELS (sorted JSON list), SM_CHANNEL_<NAME> (upper-cased), SM_HOSTS, SM_CURRENT_HOST,
# SM_CURRENT_INSTANCE_TYPE, SM_CURRENT_INSTANCE_GROUP, SM_NETWORK_INTERFACE_NAME, SM_HPS,
# SM_HP_<NAME>, SM_USER_ARGS, SM_NUM_CPUS, SM_NUM_GPUS, SM_LOG_LEVEL, SM_RESOURCE_CONFIG,
# SM_INPUT_DATA_CONFIG and SM_TRAINING_ENV. SM_NUM_HOSTS is ours (not the toolkit's).
# As in the toolkit, hyperparameters named sagemaker_* are left out and each value is
# JSON-decoded when it is a JSON scalar or string ("3" -> 3, "\"a\"" -> a).
# Differences from the toolkit: a channel or hyperparameter whose SM_CHANNEL_/SM_HP_ name is not
# a shell name (it has '-' or '.', like the workspace channel sm-workspace) gets no variable of
# its own (a shell cannot export it) but is in SM_CHANNELS/SM_HPS; numbers are passed on as
# written (Python would print 1e3 as 1000.0); JSON objects/lists inside a hyperparameter value
# stay strings; non-ASCII text is kept as UTF-8 instead of \u escapes; the module/framework
# entries of script mode (SM_MODULE_*, SM_FRAMEWORK_*, SM_USER_ENTRY_POINT) are not set; a
# variable longer than 32000 characters is left out with a note (exec would fail on it).
# All of this runs in the subshell that becomes the script (see "run").
#
# JSON without jq: SageMaker writes these files itself and they are small, so a scanner in
# plain sh reads them: $jr holds the unread rest of the document, the json_* functions consume
# one token or value from its start. Values are only ever assigned or exported, never evaluated.

tab=$(printf '\t')
cr=$(printf '\r')
nl='
'
json_wsp=" $tab$cr$nl"
# Every control character, which a JSON string must escape.
json_ctl=$(printf '\001\002\003\004\005\006\007\010\011\012\013\014\015\016\017\020\021\022\023\024\025\026\027\030\031\032\033\034\035\036\037')
default_ifs=" $tab$nl"
jr=
js=
jq=

# Loads a file into $jr (lines joined by spaces: JSON has no raw newline inside a string).
json_load() {
    jr=
    [ -r "$1" ] || return 1
    while IFS= read -r json_line || [ -n "$json_line" ]; do
        jr="$jr$json_line "
    done <"$1"
    json_w=${jr##*[!$json_wsp]}
    jr=${jr%"$json_w"}
}

json_ws() {
    json_w=${jr%%[!$json_wsp]*}
    jr=${jr#"$json_w"}
}

# Appends code point $1 to $js as UTF-8.
json_utf8() {
    json_c=$1
    if [ "$json_c" -eq 10 ]; then
        js=$js$nl
        return 0
    fi
    [ "$json_c" -ne 0 ] || return 0 # a shell string cannot hold NUL
    if [ "$json_c" -lt 128 ]; then
        set -- "$json_c"
    elif [ "$json_c" -lt 2048 ]; then
        set -- $((192 + json_c / 64)) $((128 + json_c % 64))
    elif [ "$json_c" -lt 65536 ]; then
        set -- $((224 + json_c / 4096)) $((128 + json_c / 64 % 64)) $((128 + json_c % 64))
    else
        set -- $((240 + json_c / 262144)) $((128 + json_c / 4096 % 64)) \
            $((128 + json_c / 64 % 64)) $((128 + json_c % 64))
    fi
    json_fmt=
    for json_b in "$@"; do
        json_fmt="$json_fmt\\$((json_b / 64))$((json_b / 8 % 8))$((json_b % 8))"
    done
    # shellcheck disable=SC2059 # the format is only octal escapes built above
    js=$js$(printf "$json_fmt")
}

# Consumes the string at the start of $jr; its decoded value goes to $js.
json_string() {
    case $jr in
        \"*) jr=${jr#?} ;;
        *) return 1 ;;
    esac
    js=
    while :; do
        json_chunk=${jr%%[\"\\]*}
        [ "$json_chunk" != "$jr" ] || return 1 # unterminated
        js=$js$json_chunk
        jr=${jr#"$json_chunk"}
        case $jr in
            \"*)
                jr=${jr#?}
                return 0
                ;;
        esac
        jr=${jr#?} # the backslash
        case $jr in
            \"*) js=$js\" ;;
            \\*) js=$js\\ ;;
            /*) js=$js/ ;;
            b*) json_utf8 8 ;;
            f*) json_utf8 12 ;;
            n*) js=$js$nl ;;
            r*) js=$js$cr ;;
            t*) js=$js$tab ;;
            u*)
                json_hex=${jr#u}
                json_hex=${json_hex%"${json_hex#????}"}
                case $json_hex in
                    *[!0-9A-Fa-f]* | '' | ? | ?? | ???) return 1 ;;
                esac
                jr=${jr#u????}
                json_cp=$((0x$json_hex))
                if [ "$json_cp" -ge 55296 ] && [ "$json_cp" -le 56319 ]; then
                    case $jr in
                        \\u[dD][c-fC-F][0-9A-Fa-f][0-9A-Fa-f]*)
                            json_hex=${jr#??}
                            json_hex=${json_hex%"${json_hex#????}"}
                            jr=${jr#??????}
                            json_cp=$((65536 + (json_cp - 55296) * 1024 + 0x$json_hex - 56320))
                            ;;
                    esac
                fi
                json_utf8 "$json_cp"
                continue
                ;;
            *) return 1 ;;
        esac
        jr=${jr#?}
    done
}

# Consumes a bare scalar (number, true, false, null) into $js.
json_scalar() {
    js=${jr%%[!0-9A-Za-z.+-]*}
    [ -n "$js" ] || return 1
    jr=${jr#"$js"}
}

# Consumes any one value, nested objects and arrays included.
json_skip() {
    json_depth=0
    while :; do
        json_ws
        case $jr in
            \"*) json_string || return 1 ;;
            [[{]*)
                json_depth=$((json_depth + 1))
                jr=${jr#?}
                ;;
            []}]*)
                json_depth=$((json_depth - 1))
                jr=${jr#?}
                [ "$json_depth" -ge 0 ] || return 1
                ;;
            [,:]*)
                [ "$json_depth" -gt 0 ] || return 1
                jr=${jr#?}
                ;;
            *) json_scalar || return 1 ;;
        esac
        [ "$json_depth" -gt 0 ] || return 0
    done
}

# Walks the object at the start of $jr: for each member, sets $json_key and runs the handler $1,
# which must consume the member's value.
json_members() {
    json_ws
    case $jr in
        \{*) jr=${jr#?} ;;
        *) return 1 ;;
    esac
    json_ws
    case $jr in
        \}*)
            jr=${jr#?}
            return 0
            ;;
    esac
    while :; do
        json_ws
        json_string || return 1
        json_key=$js
        json_ws
        case $jr in
            :*) jr=${jr#?} ;;
            *) return 1 ;;
        esac
        json_ws
        "$1" || return 1
        json_ws
        case $jr in
            ,*) jr=${jr#?} ;;
            \}*)
                jr=${jr#?}
                return 0
                ;;
            *) return 1 ;;
        esac
    done
}

# Walks the array of strings at the start of $jr, running the handler $1 with each in $js.
json_string_array() {
    case $jr in
        \[*) jr=${jr#?} ;;
        *) return 1 ;;
    esac
    json_ws
    case $jr in
        \]*)
            jr=${jr#?}
            return 0
            ;;
    esac
    while :; do
        json_ws
        json_string || return 1
        "$1" || return 1
        json_ws
        case $jr in
            ,*) jr=${jr#?} ;;
            \]*)
                jr=${jr#?}
                return 0
                ;;
            *) return 1 ;;
        esac
    done
}

# $1 as a JSON string literal, in $jq.
json_quote() {
    json_in=$1
    jq=
    while :; do
        json_chunk=${json_in%%[\"\\$json_ctl]*}
        jq=$jq$json_chunk
        [ "$json_chunk" != "$json_in" ] || break
        json_in=${json_in#"$json_chunk"}
        json_rest=${json_in#?}
        json_c=${json_in%"$json_rest"}
        json_in=$json_rest
        case $json_c in
            \") jq=$jq'\"' ;;
            \\) jq=$jq'\\' ;;
            "$nl") jq=$jq'\n' ;;
            "$tab") jq=$jq'\t' ;;
            "$cr") jq=$jq'\r' ;;
            *)
                json_i=1
                while [ "$json_i" -lt 32 ]; do
                    # shellcheck disable=SC2059 # an octal escape built here
                    [ "$json_c" != "$(printf "\\$((json_i / 8))$((json_i % 8))")" ] || break
                    json_i=$((json_i + 1))
                done
                jq=$jq\\u00$((json_i / 16))$(printf '%x' $((json_i % 16)))
                ;;
        esac
    done
    jq=\"$jq\"
}

# True when $1 is a JSON number (or NaN/Infinity, which Python's json.loads accepts too).
json_is_number() {
    case $1 in
        NaN | Infinity | -Infinity) return 0 ;;
    esac
    json_n=${1#-}
    case $json_n in
        0*) json_n=${json_n#0} ;;
        [1-9]*) json_n=${json_n#"${json_n%%[!0-9]*}"} ;;
        *) return 1 ;;
    esac
    case $json_n in
        .[0-9]*)
            json_n=${json_n#.}
            json_n=${json_n#"${json_n%%[!0-9]*}"}
            ;;
    esac
    case $json_n in
        [eE][0-9]* | [eE][+-][0-9]*)
            json_n=${json_n#?}
            json_n=${json_n#[+-]}
            json_n=${json_n#"${json_n%%[!0-9]*}"}
            ;;
    esac
    [ -z "$json_n" ]
}

# $1 upper-cased (ASCII, like Python's str.upper for shell names), in $upper.
to_upper() {
    upper_in=$1
    upper=
    while [ -n "$upper_in" ]; do
        upper_rest=${upper_in#?}
        upper_c=${upper_in%"$upper_rest"}
        upper_in=$upper_rest
        case $upper_c in
            a) upper_c=A ;; b) upper_c=B ;; c) upper_c=C ;; d) upper_c=D ;; e) upper_c=E ;;
            f) upper_c=F ;; g) upper_c=G ;; h) upper_c=H ;; i) upper_c=I ;; j) upper_c=J ;;
            k) upper_c=K ;; l) upper_c=L ;; m) upper_c=M ;; n) upper_c=N ;; o) upper_c=O ;;
            p) upper_c=P ;; q) upper_c=Q ;; r) upper_c=R ;; s) upper_c=S ;; t) upper_c=T ;;
            u) upper_c=U ;; v) upper_c=V ;; w) upper_c=W ;; x) upper_c=X ;; y) upper_c=Y ;;
            z) upper_c=Z ;;
        esac
        upper=$upper$upper_c
    done
}

# Exports $1=$2 unless the value is too long for a process environment (Linux takes at most
# 128 KiB per variable; 32000 characters stay below that in any encoding).
export_bounded() {
    if [ "${#2}" -gt 32000 ]; then
        say "note: $1 is not set: its value has ${#2} characters, too many for the environment"
        unset "$1"
        return 0
    fi
    export "$1=$2"
}

is_shell_name() {
    case $1 in
        '' | [!A-Za-z_]* | *[!A-Za-z0-9_]*) return 1 ;;
    esac
}

# Inserts line $2 into the sorted newline-terminated list $1 (byte order, like Python's
# sorted for these names); result in $sorted.
sorted_insert() {
    sorted=
    sorted_done=0
    IFS=$nl
    for sorted_item in $1; do
        if [ "$sorted_done" = 0 ] && [ "$2" \< "$sorted_item" ]; then
            sorted=$sorted$2$nl
            sorted_done=1
        fi
        sorted=$sorted$sorted_item$nl
    done
    IFS=$default_ifs
    [ "$sorted_done" = 1 ] || sorted=$sorted$2$nl
}

sm_host=
sm_hosts_json=
sm_num_hosts=0
sm_first_host=
sm_iface=eth0
sm_instance_type=local
sm_group=homogeneousCluster
sm_channels=
sm_hp_lines=

sm_add_host() {
    json_quote "$js"
    sm_hosts_json=${sm_hosts_json:+$sm_hosts_json,}$jq
    sm_num_hosts=$((sm_num_hosts + 1))
    [ -n "$sm_first_host" ] || sm_first_host=$js
}

sm_resource_member() {
    case $json_key in
        current_host) json_string && sm_host=$js ;;
        hosts)
            sm_hosts_json=
            sm_num_hosts=0
            sm_first_host=
            json_string_array sm_add_host
            ;;
        network_interface_name) json_string && sm_iface=$js ;;
        current_instance_type) json_string && sm_instance_type=$js ;;
        current_group_name) json_string && sm_group=$js ;;
        *) json_skip ;;
    esac
}

sm_channel_member() {
    case $json_key in
        *"$nl"*) ;;
        *)
            sorted_insert "$sm_channels" "$json_key"
            sm_channels=$sorted
            ;;
    esac
    json_skip
}

sm_hp_member() {
    case $jr in
        \"*) json_string || return 1 ;;
        *) json_scalar || return 1 ;; # SageMaker writes strings; tolerate bare scalars
    esac
    case $json_key in
        sagemaker_*) return 0 ;; # framework parameters, not hyperparameters (as the toolkit)
        *"$nl"* | *"$tab"*)
            say "note: a hyperparameter name holds a tab or newline: left out of SM_HPS"
            return 0
            ;;
    esac
    sm_raw=$js
    # The toolkit json.loads each value when it can; env values print non-strings as JSON,
    # SM_USER_ARGS with Python's str().
    if [ "$sm_raw" = true ] || [ "$sm_raw" = false ] || [ "$sm_raw" = null ] ||
        json_is_number "$sm_raw"; then
        sm_hps_value=$sm_raw
        sm_env_value=$sm_raw
        case $sm_raw in
            true) sm_arg=True ;;
            false) sm_arg=False ;;
            null)
                sm_arg=None
                sm_env_value=
                ;;
            *) sm_arg=$sm_raw ;;
        esac
    else
        sm_decoded=0
        case $sm_raw in
            \"*\")
                sm_saved=$jr
                jr=$sm_raw
                if json_string; then
                    json_ws
                    [ -n "$jr" ] || sm_decoded=1
                fi
                jr=$sm_saved
                ;;
        esac
        [ "$sm_decoded" = 1 ] || js=$sm_raw
        sm_env_value=$js
        sm_arg=$js
        json_quote "$js"
        sm_hps_value=$jq
    fi
    to_upper "$json_key"
    if is_shell_name "SM_HP_$upper"; then
        export_bounded "SM_HP_$upper" "$sm_env_value"
    else
        say "note: hyperparameter '$json_key' has no SM_HP_ variable (not a shell name): read it from SM_HPS"
    fi
    json_quote "$sm_arg"
    sorted_insert "$sm_hp_lines" "$json_key$tab$sm_hps_value$tab$jq"
    sm_hp_lines=$sorted
}

count_cpus() {
    cpus=0
    if [ -r /proc/cpuinfo ]; then
        while IFS= read -r cpu_line; do
            case $cpu_line in
                processor*:*) cpus=$((cpus + 1)) ;;
            esac
        done </proc/cpuinfo
    fi
    if [ "$cpus" -eq 0 ] && command -v nproc >/dev/null 2>&1; then
        cpus=$(nproc 2>/dev/null) || cpus=0
        case $cpus in
            '' | *[!0-9]*) cpus=0 ;;
        esac
    fi
    [ "$cpus" -gt 0 ] || cpus=1
}

count_gpus() {
    gpus=0
    command -v nvidia-smi >/dev/null 2>&1 || return 0
    gpu_list=$(nvidia-smi --list-gpus 2>/dev/null) || return 0
    IFS=$nl
    for gpu_line in $gpu_list; do
        case $gpu_line in
            "GPU "*) gpus=$((gpus + 1)) ;;
        esac
    done
    IFS=$default_ifs
}

export_training_env() {
    ml=${SME_ML_ROOT%/}
    config_dir=$ml/input/config

    rc_json='{}'
    if json_load "$config_dir/resourceconfig.json"; then
        rc_json=$jr
        json_members sm_resource_member || {
            rc_json='{}'
            say "warning: cannot parse $config_dir/resourceconfig.json: SM_HOSTS and SM_CURRENT_HOST may be incomplete"
        }
    else
        say "warning: $config_dir/resourceconfig.json is missing: SM_HOSTS and SM_CURRENT_HOST are empty"
    fi
    idc_json='{}'
    if json_load "$config_dir/inputdataconfig.json"; then
        idc_json=$jr
        json_members sm_channel_member || {
            idc_json='{}'
            say "warning: cannot parse $config_dir/inputdataconfig.json: SM_CHANNELS may be incomplete"
        }
    fi
    if json_load "$config_dir/hyperparameters.json"; then
        json_members sm_hp_member ||
            say "warning: cannot parse $config_dir/hyperparameters.json: SM_HPS may be incomplete"
    fi
    count_cpus
    count_gpus

    channels_json=
    channel_dirs_json=
    IFS=$nl
    for channel_name in $sm_channels; do
        IFS=$default_ifs
        json_quote "$channel_name"
        channels_json=${channels_json:+$channels_json,}$jq
        channel_key=$jq
        json_quote "$ml/input/data/$channel_name"
        channel_dirs_json=${channel_dirs_json:+$channel_dirs_json,}$channel_key:$jq
        to_upper "$channel_name"
        if is_shell_name "SM_CHANNEL_$upper"; then
            export "SM_CHANNEL_$upper=$ml/input/data/$channel_name"
        elif [ "$channel_name" != sm-workspace ]; then
            say "note: channel '$channel_name' has no SM_CHANNEL_ variable (not a shell name): it is $ml/input/data/$channel_name"
        fi
    done
    IFS=$default_ifs

    hps_json=
    user_args_json=
    IFS=$nl
    for hp_line in $sm_hp_lines; do
        hp_key=${hp_line%%"$tab"*}
        hp_rest=${hp_line#*"$tab"}
        json_quote "$hp_key"
        hps_json=${hps_json:+$hps_json,}$jq:${hp_rest%%"$tab"*}
        if [ "${#hp_key}" -gt 1 ]; then
            json_quote "--$hp_key"
        else
            json_quote "-$hp_key"
        fi
        user_args_json=${user_args_json:+$user_args_json,}$jq,${hp_rest#*"$tab"}
    done
    IFS=$default_ifs

    if [ -n "$sm_host" ] && [ "$sm_host" = "$sm_first_host" ]; then
        is_master=true
    else
        is_master=false
    fi
    if [ -n "${TRAINING_JOB_NAME:-}" ]; then
        json_quote "$TRAINING_JOB_NAME"
        job_name_json=$jq
    else
        job_name_json=null
    fi

    export SM_MODEL_DIR="$ml/model"
    export SM_INPUT_DIR="$ml/input"
    export SM_INPUT_CONFIG_DIR="$config_dir"
    export SM_OUTPUT_DIR="$ml/output"
    export SM_OUTPUT_DATA_DIR="$ml/output/data"
    export SM_OUTPUT_INTERMEDIATE_DIR="$ml/output/intermediate"
    export SM_CHANNELS="[$channels_json]"
    export SM_HOSTS="[$sm_hosts_json]"
    export SM_CURRENT_HOST="$sm_host"
    export SM_NUM_HOSTS="$sm_num_hosts"
    export SM_CURRENT_INSTANCE_TYPE="$sm_instance_type"
    export SM_CURRENT_INSTANCE_GROUP="$sm_group"
    export SM_NETWORK_INTERFACE_NAME="$sm_iface"
    hps_json="{$hps_json}"
    user_args_json="[$user_args_json]"
    export_bounded SM_HPS "$hps_json"
    export_bounded SM_USER_ARGS "$user_args_json"
    export SM_NUM_CPUS="$cpus"
    export SM_NUM_GPUS="$gpus"
    export SM_LOG_LEVEL=20
    export_bounded SM_RESOURCE_CONFIG "$rc_json"
    export_bounded SM_INPUT_DATA_CONFIG "$idc_json"
    json_quote "$sm_host"
    current_host_json=$jq
    json_quote "$sm_first_host"
    master_json=$jq
    json_quote "$sm_instance_type"
    instance_type_json=$jq
    json_quote "$sm_group"
    group_json=$jq
    json_quote "$sm_iface"
    iface_json=$jq
    json_quote "$ml"
    ml_json=${jq%\"}
    export_bounded SM_TRAINING_ENV "{\"channel_input_dirs\":{$channel_dirs_json},\"current_host\":$current_host_json,\"current_instance_group\":$group_json,\"current_instance_type\":$instance_type_json,\"hosts\":$SM_HOSTS,\"hyperparameters\":$hps_json,\"input_config_dir\":$ml_json/input/config\",\"input_data_config\":$idc_json,\"input_dir\":$ml_json/input\",\"is_master\":$is_master,\"job_name\":$job_name_json,\"log_level\":20,\"master_hostname\":$master_json,\"model_dir\":$ml_json/model\",\"network_interface_name\":$iface_json,\"num_cpus\":$cpus,\"num_gpus\":$gpus,\"output_data_dir\":$ml_json/output/data\",\"output_dir\":$ml_json/output\",\"output_intermediate_dir\":$ml_json/output/intermediate\",\"resource_config\":$rc_json,\"user_args\":$user_args_json}"
    say "SageMaker training environment: host $sm_host of $sm_num_hosts, channels $SM_CHANNELS, $cpus CPUs, $gpus GPUs"
}

# --- run --------------------------------------------------------------------------------------
script=$channel/script
[ -f "$script" ] || die "the stage script $script is missing"
if command -v bash >/dev/null 2>&1; then
    shell='bash'
else
    shell='sh'
    say "bash is not installed: running the script with sh"
fi
cd "$SME_PROJECT_DIR" || die "cannot enter $SME_PROJECT_DIR"

status=0
if [ "$terminated" = 1 ]; then
    say "stopped before the script started"
    write_failure "the job was stopped (SIGTERM) before the script started"
    exit 143
fi
# The SM_* variables are exported in the subshell that becomes the script, so the bootstrap's own
# commands (tar, mkdir) never carry them.
(
    if [ "$SME_MODE" = sagemaker ]; then
        export_training_env
    fi
    say "running the script with $shell in $SME_PROJECT_DIR"
    exec "$shell" "$script"
) &
child=$!
# A SIGTERM that came between the check above and the start of the script.
if [ "$terminated" = 1 ]; then
    forward_term
fi
while :; do
    wait "$child"
    status=$?
    # wait also returns (with 128+n) when a trapped signal arrives; the script may still run.
    if kill -0 "$child" 2>/dev/null; then
        continue
    fi
    break
done
# From here on, finish packing whatever happens: the platform kills us after its grace period.
trap '' TERM
if [ "$terminated" = 1 ]; then
    say "the script ended after SIGTERM (status $status)"
else
    say "the script exited with status $status"
fi

# --- pack -------------------------------------------------------------------------------------
set --
if [ -e "$SME_PROJECT_DIR" ]; then
    set -- "$project_member"
fi
if [ -e "$SME_PROJECT_DIR.tmp" ]; then
    set -- "$@" "$project_member.tmp"
fi
pack_status=0
output=$SME_OUTPUT_DIR/$returned
if [ $# -eq 0 ]; then
    say "nothing to pack: $SME_PROJECT_DIR no longer exists"
elif ! mkdir -p "$SME_OUTPUT_DIR"; then
    pack_status=1
    say "packing the workspace failed: cannot create $SME_OUTPUT_DIR"
else
    cd / || true
    case $returned in
        *.gz) tar -czf "$output" -C / "$@" ;;
        *) tar -cf "$output" -C / "$@" ;;
    esac
    pack_status=$?
    if [ "$pack_status" -eq 0 ]; then
        say "packed the workspace into $output ($(size_of "$output"))"
    else
        say "packing the workspace failed (tar exited with status $pack_status)"
    fi
fi

# --- exit status ------------------------------------------------------------------------------
if [ "$terminated" = 1 ]; then
    write_failure "the job was stopped (SIGTERM) while the script was running"
    exit 143
fi
if [ "$status" -ne 0 ]; then
    write_failure "script exited with status $status"
    exit "$status"
fi
if [ "$pack_status" -ne 0 ]; then
    # The script succeeded but its artifacts would silently be missing: fail loudly instead.
    write_failure "packing the workspace failed (tar exited with status $pack_status)"
    exit 1
fi
exit 0
