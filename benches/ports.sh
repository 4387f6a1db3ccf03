# Sourced by the bench scripts: waits for loopback ports that an earlier run may still hold.
#
# A port still held by an earlier run (a process that is still shutting down) would make a new process
# fail to bind, or worse, make a readiness check talk to the old one. Each port gets ten seconds.

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for_free_ports PORT... : returns once every port is free; exits the script if one stays taken.
wait_for_free_ports() {
    local port
    for port in "$@"; do
        for _ in $(seq 1 50); do port_free "$port" && break; sleep 0.2; done
        port_free "$port" || { echo "port $port is in use; stop what holds it first" >&2; exit 1; }
    done
}
