#!/usr/bin/env bash
# A real, single-host, 2-node Slurm cluster for llmb's integration tests.
#
#   scripts/slurm-local.sh start    install Slurm + munge if missing (Debian), start the cluster
#   scripts/slurm-local.sh stop     stop the daemons this script started
#   scripts/slurm-local.sh status   exit 0 when the cluster answers
#   scripts/slurm-local.sh env      print `export SLURM_CONF=...` for a shell to eval
#
# Two slurmd run on this host as node1 and node2 (Debian's slurmd allows several per host), each
# claiming 4 CPUs (SlurmdParameters=config_overrides lets nodes claim more than the host has), on
# loopback ports (LLMB_SLURM_CTLD_PORT, default 16817; LLMB_SLURM_NODE_PORT, default 17001 and
# the next). State, spool, logs and pid files live under $LLMB_SLURM_DIR (default /tmp/llmb-slurm). Accounting: jobcomp/filetxt, so `sacct -c` works; plain `sacct`
# does not (no slurmdbd).
set -euo pipefail

DIR=${LLMB_SLURM_DIR:-/tmp/llmb-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
CTLD_PORT=${LLMB_SLURM_CTLD_PORT:-16817}
NODE_PORT=${LLMB_SLURM_NODE_PORT:-17001}  # node1 listens here, node2 on the next port

log() { printf 'slurm-local: %s\n' "$*" >&2; }

alive() {  # PID 1 here reaps slowly: a zombie counts as dead
  local pid=$1
  [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    log "Slurm is not installed and cannot be installed here (needs root and apt-get)"
    return 1
  fi
  log "installing slurmctld slurmd slurm-client munge (Debian packages)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  fi
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null; }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- munged --force
  for _ in $(seq 50); do
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  log "munged did not start"
  return 1
}

write_conf() {
  mkdir -p "$DIR/state" "$DIR/spool/node1" "$DIR/spool/node2" "$DIR/log"
  cat >"$CONF" <<CONF
ClusterName=llmblocal
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
InactiveLimit=0
KillWait=5
MinJobAge=600
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
NodeName=node[1-2] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$NODE_PORT-$((NODE_PORT + 1)) CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

pidfile_alive() { [ -s "$1" ] && alive "$(cat "$1")"; }

start() {
  install_packages
  start_munge
  export SLURM_CONF=$CONF
  if pidfile_alive "$DIR/slurmctld.pid" && scontrol ping >/dev/null 2>&1; then
    log "already running ($CONF)"
  else
    write_conf
    slurmctld -c -f "$CONF"
    for n in node1 node2; do slurmd -N "$n" -f "$CONF"; done
  fi
  for _ in $(seq 100); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^idle'; then
      if [ "$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)" -ge 2 ]; then
        log "cluster up: $(sinfo -h -o '%D nodes %T' | tr '\n' ' ')(SLURM_CONF=$CONF)"
        return 0
      fi
    fi
    sleep 0.2
  done
  log "cluster did not come up; see $DIR/log"
  return 1
}

stop() {
  local pid f
  for f in "$DIR"/slurmd-node1.pid "$DIR"/slurmd-node2.pid "$DIR"/slurmctld.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    alive "$pid" && kill "$pid" 2>/dev/null || true
  done
  for f in "$DIR"/slurmd-node1.pid "$DIR"/slurmd-node2.pid "$DIR"/slurmctld.pid; do
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    alive "$pid" && kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) SLURM_CONF=$CONF scontrol ping >/dev/null 2>&1 ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
