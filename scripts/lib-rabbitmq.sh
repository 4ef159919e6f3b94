# Shell helpers to run a private, throwaway RabbitMQ node.
# Sourced by scripts/test (and scripts/rmq-node); not a command of its own.
#
#   rmq_start_throwaway
#     Starts a node of its own and waits until it accepts connections. Sets
#     and exports RMQ_TMP (the node's directory), RMQ_NODE (its Erlang node
#     name), RMQ_URL (amqp://guest:guest@127.0.0.1:<port>/) and
#     CQRS_TEST_RMQ_CONTROL (scripts/rmq-node, for tests that restart or kill
#     the node).
#   rmq_stop_throwaway
#     Stops the node, its epmd, and deletes RMQ_TMP. Safe to call more than
#     once.
#   rmq_restart_throwaway
#     Stops the node and starts it again: same name, ports and data directory
#     (durable exchanges, queues and persistent messages survive).
#   rmq_kill_throwaway
#     SIGKILLs the node's beam.smp (only this node's), as a crash would.
#
# Isolation from any system-wide broker (Debian's rabbitmq-server package
# starts one on install where services may start): the node has its own name
# (cqrs-test-<pid>@localhost), AMQP port, distribution port and epmd port
# (ERL_EPMD_PORT, so it never registers with a system epmd), its own Erlang
# cookie (HOME is RMQ_TMP), config, data and log directories under RMQ_TMP,
# no plugins, and listens on 127.0.0.1 only. The node runs as the current
# user (root included: RabbitMQ does not refuse it, and every file it writes
# is under RMQ_TMP, removed at the end).
#
# Everything a later shell needs to drive the same node is saved in
# RMQ_TMP/env, which rmq_load_env sources (scripts/rmq-node uses it).

RMQ_SBIN=/usr/lib/rabbitmq/bin

# A TCP port nobody listens on, in 20000..59999.
rmq_free_port() {
  local p i
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 40000))
    if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
      echo "$p"
      return 0
    fi
  done
  echo "lib-rabbitmq.sh: no free port found" >&2
  return 1
}

# Sources RMQ_TMP/env, which exports the node's environment.
rmq_load_env() {
  [[ -n ${RMQ_TMP:-} && -f $RMQ_TMP/env ]] || {
    echo "lib-rabbitmq.sh: no throwaway node (RMQ_TMP=${RMQ_TMP:-unset})" >&2
    return 1
  }
  # shellcheck source=/dev/null
  source "$RMQ_TMP/env"
}

# Runs a RabbitMQ command line tool with the node's environment.
rmq_ctl() {
  (rmq_load_env && "$RMQ_SBIN/$1" "${@:2}")
}

# Starts the node described by RMQ_TMP/env and waits until it accepts AMQP
# connections.
rmq_boot() {
  local start=$SECONDS
  (
    rmq_load_env || exit 1
    # setsid: the node leaves the caller's process group, so a ^C of the
    # test run reaches the trap (which stops it) rather than killing the
    # node half-way.
    exec setsid "$RMQ_SBIN/rabbitmq-server" >>"$RMQ_TMP/stdout.log" 2>&1 </dev/null
  ) &
  local launcher=$!
  # Ready = the AMQP port accepts: RabbitMQ opens its listeners in the last
  # boot step, after everything `rabbitmqctl await_startup` waits for.
  # Probing the port costs nothing, where each rabbitmqctl call boots an
  # Erlang VM (1 to 4 s here), which would double the startup time.
  local deadline=$((SECONDS + ${RMQ_START_TIMEOUT:-60}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$RMQ_PORT") 2>/dev/null; do
    if ! kill -0 "$launcher" 2>/dev/null || ((SECONDS >= deadline)); then
      echo "lib-rabbitmq.sh: node $RMQ_NODE did not start (within" \
        "${RMQ_START_TIMEOUT:-60}s); its output and log:" >&2
      cat "$RMQ_TMP/stdout.log" "$RMQ_TMP"/log/*.log >&2 2>/dev/null
      return 1
    fi
    sleep 0.1
  done
  RMQ_START_SECONDS=$((SECONDS - start))
}

rmq_start_throwaway() {
  [[ -x $RMQ_SBIN/rabbitmq-server ]] || {
    echo "RabbitMQ not found (apt-get install rabbitmq-server)" >&2
    return 1
  }
  RMQ_TMP=$(mktemp -d /tmp/cqrs-rmq.XXXXXX)
  local port dist_port epmd_port ctl_port
  port=$(rmq_free_port) && dist_port=$(rmq_free_port) &&
    epmd_port=$(rmq_free_port) && ctl_port=$(rmq_free_port) || return 1
  RMQ_NODE="cqrs-test-$$@localhost"
  RMQ_PORT=$port
  RMQ_URL="amqp://guest:guest@127.0.0.1:$port/"
  mkdir -p "$RMQ_TMP/mnesia" "$RMQ_TMP/log"
  head -c 24 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$RMQ_TMP/.erlang.cookie"
  chmod 400 "$RMQ_TMP/.erlang.cookie"
  echo "[]." >"$RMQ_TMP/enabled_plugins.erl"
  # guest may log in from loopback only (RabbitMQ's default): all tests
  # need. No console logging: the log file is shown when startup fails.
  cat >"$RMQ_TMP/rabbitmq.conf" <<EOF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users.guest = true
log.console = false
log.file.level = info
EOF
  # The env file: single-quoted values are safe here (no quotes in them).
  cat >"$RMQ_TMP/env" <<EOF
export HOME='$RMQ_TMP'
export RMQ_TMP='$RMQ_TMP'
export RMQ_NODE='$RMQ_NODE'
export RMQ_PORT='$port'
export RMQ_URL='$RMQ_URL'
export RABBITMQ_NODENAME='$RMQ_NODE'
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT='$port'
export RABBITMQ_DIST_PORT='$dist_port'
export RABBITMQ_CTL_DIST_PORT_MIN='$ctl_port'
export RABBITMQ_CTL_DIST_PORT_MAX='$((ctl_port + 10))'
export ERL_EPMD_PORT='$epmd_port'
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_CONF_ENV_FILE='$RMQ_TMP/rabbitmq-env.conf'
export RABBITMQ_CONFIG_FILE='$RMQ_TMP/rabbitmq.conf'
export RABBITMQ_ADVANCED_CONFIG_FILE='$RMQ_TMP/advanced.config'
export RABBITMQ_ENABLED_PLUGINS_FILE='$RMQ_TMP/enabled_plugins.erl'
export RABBITMQ_MNESIA_BASE='$RMQ_TMP/mnesia'
export RABBITMQ_LOG_BASE='$RMQ_TMP/log'
export RABBITMQ_PID_FILE='$RMQ_TMP/node.pid'
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
EOF
  : >"$RMQ_TMP/rabbitmq-env.conf"
  CQRS_TEST_RMQ_CONTROL=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/rmq-node
  export RMQ_TMP RMQ_NODE RMQ_URL RMQ_PORT CQRS_TEST_RMQ_CONTROL
  rmq_boot || {
    rmq_stop_throwaway
    return 1
  }
}

# The node's beam.smp pid, if it runs.
rmq_beam_pid() {
  local pid
  pid=$(cat "$RMQ_TMP/node.pid" 2>/dev/null) || return 1
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Stops the node (SIGTERM: RabbitMQ shuts down in order, closing client
# connections with CONNECTION_FORCED; SIGKILL after 10 s), keeping RMQ_TMP.
# SIGTERM rather than `rabbitmqctl stop`, which boots an Erlang VM first.
rmq_halt() {
  [[ -n ${RMQ_TMP:-} && -d $RMQ_TMP ]] || return 0
  local pid i
  pid=$(rmq_beam_pid) || true
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$RMQ_TMP/node.pid"
}

rmq_stop_throwaway() {
  [[ -n ${RMQ_TMP:-} && -d $RMQ_TMP ]] || return 0
  rmq_halt
  # The epmd the node started on its own port.
  (rmq_load_env && epmd -port "$ERL_EPMD_PORT" -kill) >/dev/null 2>&1 || true
  rm -rf "$RMQ_TMP"
  RMQ_TMP=
}

rmq_restart_throwaway() {
  rmq_halt && rmq_boot
}

rmq_kill_throwaway() {
  local pid
  pid=$(rmq_beam_pid) || return 0
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  rm -f "$RMQ_TMP/node.pid"
}
