# workerd config for the benchmark peer. The suite overrides the listening
# address (--socket-addr http=127.0.0.1:PORT) and the storage folder
# (--directory-path storage=DIR) on the command line, so this file is static.
# Every namespace is SQLite-backed (enableSql), as every dotrio object is.
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [
    (name = "main", worker = .bench),
    (name = "storage", disk = (path = "/tmp/dotrio-bench-workerd", writable = true)),
  ],
  sockets = [(name = "http", address = "127.0.0.1:8788", http = (), service = "main")],
);

const bench :Workerd.Worker = (
  compatibilityDate = "2024-11-01",
  modules = [(name = "worker.js", esModule = embed "worker.js")],
  durableObjectNamespaces = [
    (className = "Counter", uniqueKey = "dotrio-bench-counter", enableSql = true),
    (className = "SqlCounter", uniqueKey = "dotrio-bench-sqlcounter", enableSql = true),
    (className = "Echo", uniqueKey = "dotrio-bench-echo", enableSql = true),
    (className = "Room", uniqueKey = "dotrio-bench-room", enableSql = true),
    (className = "AlarmProbe", uniqueKey = "dotrio-bench-alarmprobe", enableSql = true),
  ],
  durableObjectStorage = (localDisk = "storage"),
  bindings = [
    (name = "COUNTER", durableObjectNamespace = "Counter"),
    (name = "SQLCOUNTER", durableObjectNamespace = "SqlCounter"),
    (name = "ECHO", durableObjectNamespace = "Echo"),
    (name = "ROOM", durableObjectNamespace = "Room"),
    (name = "ALARM", durableObjectNamespace = "AlarmProbe"),
  ],
);
