#!/usr/bin/env bash
# A one-node Slurm cluster on this machine (munged + slurmctld + slurmd), for trying and testing
# Trax's cluster path (README, "On a cluster"). Needs Debian's slurm-wlm and munge packages.
#
#   scripts/local_slurm.sh start    # write the config, start the daemons, wait until the node is idle
#   scripts/local_slurm.sh status   # daemons and sinfo; exit 1 when not running
#   scripts/local_slurm.sh stop     # stop the daemons this script started (and nothing else)
#   scripts/local_slurm.sh env      # the line to eval so that sbatch/squeue/sinfo use this cluster
#
# Everything (slurm.conf, a private munge key and socket, state, spool, logs, pid files) lives in
# $TRAX_SLURM_DIR (default: ${TMPDIR:-/tmp}/trax-slurm-<uid>); the system's /etc/slurm and munged are
# not touched. Client commands find the cluster through $SLURM_CONF: run `eval "$(scripts/local_slurm.sh env)"`.
# Ports: $TRAX_SLURM_PORT (slurmctld, default 6817) and the next one (slurmd).
set -euo pipefail

DIR=${TRAX_SLURM_DIR:-${TMPDIR:-/tmp}/trax-slurm-$(id -u)}
PORT=${TRAX_SLURM_PORT:-6817}
PARTITION=${TRAX_SLURM_PARTITION:-debug}
NODE=$(hostname -s)
CONF=$DIR/slurm.conf
DAEMONS=(slurmd slurmctld munged) # stop order

die() { echo "local_slurm: $*" >&2; exit 1; }

# pid of one of our daemons, when its pid file names a live process whose command line names $DIR.
daemon_pid() {
    local pidfile=$DIR/run/$1.pid pid
    [[ -r $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ && -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$DIR/" || return 1
    echo "$pid"
}

node_state() { SLURM_CONF=$CONF sinfo -h -N -n "$NODE" -o %t 2>/dev/null | head -1; }

write_config() {
    local cpus mem user
    cpus=$(nproc)
    mem=$(( $(free -m | awk '/^Mem:/ {print $2}') - 1024 ))
    user=$(id -un)
    cat >"$CONF" <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on $NODE.
ClusterName=trax
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
MailProg=/bin/true
# No accounting database: sacct is unavailable, job states come from squeue/scontrol, which keep
# finished jobs for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=86400
# No cgroups in a container: processes are tracked by parent pid, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    for tool in munged slurmctld slurmd sinfo sbatch; do
        command -v "$tool" >/dev/null || die "$tool not found: install Debian's slurm-wlm and munge packages"
    done
    if daemon_pid slurmctld >/dev/null && daemon_pid slurmd >/dev/null && [[ $(node_state) == idle* || $(node_state) == mix* || $(node_state) == alloc* ]]; then
        echo "local_slurm: already running ($CONF)"
        return 0
    fi
    stop >/dev/null 2>&1 || true
    mkdir -p "$DIR"/{munge,state,spool,log,run}
    chmod 700 "$DIR" "$DIR/munge"
    if [[ ! -s $DIR/munge/munge.key ]]; then
        (umask 077; head -c 1024 /dev/urandom >"$DIR/munge/munge.key")
    fi
    chmod 400 "$DIR/munge/munge.key"
    write_config
    publish_config
    munged --force --socket="$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" \
        --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
        || die "munged did not start; see $DIR/log/munged.log"
    slurmctld -f "$CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
    slurmd -f "$CONF" -N "$NODE" || die "slurmd did not start; see $DIR/log/slurmd.log"
    local state=""
    for _ in $(seq 1 120); do
        state=$(node_state)
        [[ $state == idle* ]] && break
        # A node left down/drained by an earlier run of this cluster: put it back.
        [[ $state == down* || $state == drain* ]] && SLURM_CONF=$CONF scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
        sleep 0.5
    done
    [[ $state == idle* ]] || die "node $NODE is '${state:-unknown}', not idle, after 60 s; see $DIR/log/"
    echo "local_slurm: node $NODE idle ($(nproc) CPUs, partition $PARTITION); config $CONF"
    echo "export SLURM_CONF=$CONF"
}

# Commands inside jobs must find slurm.conf without $SLURM_CONF: Snakemake's job step clears all
# SLURM_* variables before its nested srun. Slurm clients look in /etc/slurm/slurm.conf and then in
# /run/slurm/conf/slurm.conf (where configless slurmd publishes it); we link the latter to $DIR,
# unless the path is taken by something else.
RUN_CONF=/run/slurm/conf
publish_config() {
    if [[ -L $RUN_CONF && $(readlink "$RUN_CONF") == "$DIR" ]]; then
        return 0
    fi
    [[ -e /etc/slurm/slurm.conf ]] && die "/etc/slurm/slurm.conf exists: jobs would use that cluster's config, not $CONF"
    [[ -e $RUN_CONF || -L $RUN_CONF ]] && die "$RUN_CONF exists and is not ours; remove it or stop that cluster"
    mkdir -p "$(dirname "$RUN_CONF")" 2>/dev/null && ln -s "$DIR" "$RUN_CONF" 2>/dev/null \
        || die "cannot create $RUN_CONF (needs root, as slurmd does)"
}

unpublish_config() {
    if [[ -L $RUN_CONF && $(readlink "$RUN_CONF") == "$DIR" ]]; then
        rm -f "$RUN_CONF"
    fi
}

stop() {
    local name pid stopped=0
    for name in "${DAEMONS[@]}"; do
        pid=$(daemon_pid "$name") || continue
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        stopped=$((stopped + 1))
    done
    rm -f "$DIR"/run/*.pid
    unpublish_config
    echo "local_slurm: stopped $stopped daemon(s) in $DIR"
}

status() {
    local name pid up=0
    for name in munged slurmctld slurmd; do
        if pid=$(daemon_pid "$name"); then
            echo "$name: running (pid $pid)"
            up=$((up + 1))
        else
            echo "$name: not running"
        fi
    done
    [[ $up == 3 ]] || return 1
    SLURM_CONF=$CONF sinfo
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) die "usage: $0 start|stop|status|env" ;;
esac
