#!/usr/bin/env bash
# A one-node SLURM cluster on loopback for tests/test_slurm.py (Debian's slurm-wlm and munge; root; no systemd, no
# cgroups). Partitions `cpu` (default) and `gpu`; the node offers one `gres/gpu` (type `fake`) backed by /dev/null, so
# GPU requests are accepted and their jobs run on the CPU. No slurmdbd: the profile's `squeue` status command
# works without accounting.
#
#   tests/slurm/cluster.sh up       write /etc/slurm/{slurm,gres}.conf, start munged (unless one answers),
#                                   slurmctld and slurmd, wait until the node is idle
#   tests/slurm/cluster.sh down     cancel the cluster's jobs, stop exactly the daemons `up` started (by the PIDs
#                                   it recorded), remove the config files it wrote
#   tests/slurm/cluster.sh status   print the recorded daemons and sinfo
#
# The configuration must live at /etc/slurm/slurm.conf: the SLURM executor's inner `srun` drops SLURM_CONF. An
# existing slurm.conf that this script did not write is never touched (`up` refuses). State, logs and PID files go
# to $DDFLOW_SLURM_STATE (default /tmp/ddflow-slurm).
set -euo pipefail

STATE=${DDFLOW_SLURM_STATE:-/tmp/ddflow-slurm}
CONF_DIR=/etc/slurm
MARK="# written by ddflow tests/slurm/cluster.sh"
NODE=$(uname -n)
NODE=${NODE%%.*}  # the short host name (no `hostname` binary needed)

die() { echo "cluster.sh: $*" >&2; exit 1; }

ours() { [[ -f "$1" ]] && head -n 1 "$1" | grep -qxF "$MARK"; }

alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }

pid_of() { [[ -f "$STATE/$1.started" ]] && cat "$STATE/$1.started" || true; }

# start NAME LOG CMD...: run CMD in the foreground mode of the daemon, in the background, and record its PID
start() {
    local name=$1 log=$2
    shift 2
    "$@" >>"$log" 2>&1 &
    echo $! >"$STATE/$name.started"
}

write_conf() {
    # the node offers 8 CPUs and 64 GB whatever the machine has (SlurmdParameters=config_overrides), so the
    # profile's requests (up to 4 CPUs per job) are accepted on a 2-core CI machine; nothing enforces them
    # (no cgroups), the test caps concurrent jobs with --jobs instead.
    cat >"$CONF_DIR/slurm.conf" <<EOF
$MARK
ClusterName=ddflow
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
SchedulerType=sched/backfill
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=64000 Gres=gpu:fake:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    cat >"$CONF_DIR/gres.conf" <<EOF
$MARK
NodeName=$NODE Name=gpu Type=fake File=/dev/null
EOF
}

munge_answers() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

up() {
    [[ $(id -u) == 0 ]] || die "needs root (it writes /etc/slurm and starts the daemons)"
    for cmd in munged munge slurmctld slurmd sinfo scontrol; do
        command -v "$cmd" >/dev/null || die "$cmd not found: apt-get install -y slurm-wlm munge"
    done
    if alive "$(pid_of slurmctld)" && alive "$(pid_of slurmd)"; then
        echo "cluster.sh: already up (slurmctld $(pid_of slurmctld), slurmd $(pid_of slurmd))"
        return 0
    fi
    for f in slurm.conf gres.conf; do
        if [[ -e "$CONF_DIR/$f" ]] && ! ours "$CONF_DIR/$f"; then
            die "$CONF_DIR/$f exists and was not written by this script: not touching a real cluster's config"
        fi
    done
    mkdir -p "$STATE/ctld" "$STATE/d" "$CONF_DIR"
    write_conf

    if ! munge_answers; then
        install -d -o munge -g munge -m 0755 /run/munge
        install -d -o munge -g munge -m 0700 /var/lib/munge /var/log/munge
        [[ -f /etc/munge/munge.key ]] || die "/etc/munge/munge.key missing (the munge package creates it)"
        start munged "$STATE/munged.out" setpriv --reuid=munge --regid=munge --init-groups munged --foreground
        for _ in $(seq 50); do munge_answers && break; sleep 0.2; done
        munge_answers || die "munged did not start: $(tail -n 5 "$STATE/munged.out" /var/log/munge/munged.log 2>/dev/null)"
    fi
    start slurmctld "$STATE/slurmctld.out" slurmctld -D -i
    for _ in $(seq 50); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
    start slurmd "$STATE/slurmd.out" slurmd -D -N "$NODE"
    local state=""
    for _ in $(seq 100); do
        state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n 1 || true)
        [[ $state == idle* ]] && break
        sleep 0.3
    done
    if [[ $state != idle* ]]; then
        tail -n 20 "$STATE/slurmctld.log" "$STATE/slurmd.log" "$STATE"/*.out >&2 || true
        down
        die "the node did not come up (state: '${state:-none}')"
    fi
    echo "cluster.sh: up (node $NODE, partitions cpu* and gpu, state in $STATE)"
}

down() {
    if alive "$(pid_of slurmctld)"; then
        scancel --full --quiet --state=PENDING,RUNNING --user="$(id -un)" 2>/dev/null || true
        for _ in $(seq 30); do [[ -z $(squeue -h -t PENDING,RUNNING,COMPLETING 2>/dev/null) ]] && break; sleep 0.3; done
    fi
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(pid_of "$name")
        if alive "$pid"; then
            kill "$pid"
            for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
            alive "$pid" && kill -9 "$pid"
            echo "cluster.sh: stopped $name ($pid)"
        fi
        rm -f "$STATE/$name.started"
    done
    for f in slurm.conf gres.conf; do
        if ours "$CONF_DIR/$f"; then rm -f "$CONF_DIR/$f"; fi
    done
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        echo "$name: $(pid_of "$name") $(alive "$(pid_of "$name")" && echo running || echo 'not running')"
    done
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up|down|status" ;;
esac
