"""Write the Backend.AI test cluster's configuration (run with the Backend.AI venv's python).

usage: configure.py SAMPLES_DIR STATE_DIR PORTS_JSON

Starts from the sample configs shipped in the backend.ai-install wheel of the same release
(halfstack style) and changes only what a single loopback host needs: addresses and ports on
127.0.0.1, private ipc/var/scratch/vfolder paths under STATE_DIR, one process each, distinct
aiomonitor ports for manager, agent and storage-proxy (a collision makes the agent hang in
aiomonitor's start without a word in its log), the mock accelerator, hostdir scratches, and
kernels running as root (kernel-uid/gid -1). Also writes the etcd documents (volumes, redis)
and a mock-accelerator.toml with four fake CUDA devices.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tomlkit


def addr(host: str, port: int) -> tomlkit.items.InlineTable:
    table = tomlkit.inline_table()
    table["host"] = host
    table["port"] = port
    return table


def load(path: Path) -> tomlkit.TOMLDocument:
    return tomlkit.parse(path.read_text())


def main() -> None:
    samples, state, ports = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
    lo = "127.0.0.1"
    etcd = {"namespace": "local", "addr": addr(lo, ports["etcd"]), "user": "", "password": ""}

    m = load(samples / "manager.toml")
    m["etcd"].update(etcd)
    m["db"]["addr"] = addr(lo, ports["postgres"])
    m["db"]["password"] = ""
    mgr = m["manager"]
    mgr["num-proc"] = 1
    mgr["service-addr"] = addr(lo, ports["manager"])
    mgr["internal-addr"] = addr(lo, ports["manager_internal"])
    mgr["announce-addr"] = addr(lo, ports["manager"])
    mgr["announce-internal-addr"] = addr(lo, ports["manager_internal"])
    mgr["ipc-base-path"] = str(state / "ipc" / "manager")
    mgr["pid-file"] = str(state / "manager.pid")
    mgr["aiomonitor-termui-port"] = ports["mgr_aiomon_termui"]
    mgr["aiomonitor-webui-port"] = ports["mgr_aiomon_webui"]
    m["logging"]["console"]["colored"] = False
    (state / "manager.toml").write_text(tomlkit.dumps(m))

    a = load(samples / "agent.toml")
    a["etcd"].update(etcd)
    ag = a["agent"]
    ag["rpc-listen-addr"] = addr(lo, ports["agent_rpc"])
    ag["service-addr"] = addr(lo, ports["agent_service"])
    ag["announce-addr"] = addr(lo, ports["agent_service"])
    ag["agent-sock-port"] = ports["agent_sock"]
    ag["pid-file"] = str(state / "agent.pid")
    ag["ipc-base-path"] = str(state / "ipc" / "agent")
    ag["var-base-path"] = str(state / "agent-var")
    ag["image-commit-path"] = str(state / "commit")
    ag["mount-path"] = str(state / "vfroot" / "local")
    ag["allow-compute-plugins"] = ["ai.backend.accelerator.mock"]
    ag["aiomonitor-termui-port"] = ports["agent_aiomon_termui"]
    ag["aiomonitor-webui-port"] = ports["agent_aiomon_webui"]
    ag["metadata-server-port"] = ports["agent_metadata"]
    c = a["container"]
    c["port-range"] = [ports["kernel_port_lo"], ports["kernel_port_hi"]]
    c["kernel-uid"] = -1
    c["kernel-gid"] = -1
    c["bind-host"] = lo
    c["scratch-type"] = "hostdir"
    c["scratch-root"] = str(state / "scratches")
    a["watcher"]["service-addr"] = addr(lo, ports["watcher"])
    a["resource"]["reserved-cpu"] = 0
    a["resource"]["reserved-mem"] = "512M"
    a["resource"]["reserved-disk"] = "1G"
    a["logging"]["console"]["colored"] = False
    (state / "agent").mkdir(exist_ok=True)
    (state / "agent" / "agent.toml").write_text(tomlkit.dumps(a))

    s = load(samples / "storage-proxy.toml")
    s["etcd"] = tomlkit.table()
    s["etcd"]["namespace"] = "local"
    s["etcd"]["addr"] = addr(lo, ports["etcd"])
    sp = s["storage-proxy"]
    sp["secret"] = ports["storage_secret"]
    sp["ipc-base-path"] = str(state / "ipc" / "storage-proxy")
    sp["pid-file"] = str(state / "storage-proxy.pid")
    sp["aiomonitor-termui-port"] = ports["sp_aiomon_termui"]
    sp["aiomonitor-webui-port"] = ports["sp_aiomon_webui"]
    s["api"]["client"]["service-addr"] = addr(lo, ports["storage_client"])
    mapi = s["api"]["manager"]
    mapi["service-addr"] = addr(lo, ports["storage_manager"])
    mapi["internal-addr"] = addr(lo, ports["storage_internal"])
    mapi["announce-addr"] = addr(lo, ports["storage_manager"])
    mapi["announce-internal-addr"] = addr(lo, ports["storage_internal"])
    mapi["ssl-cert"] = str(state / "ssl" / "storage-manager.cert.pem")
    mapi["ssl-privkey"] = str(state / "ssl" / "storage-manager.key.pem")
    mapi["secret"] = ports["storage_manager_secret"]
    s["volume"]["volume1"]["path"] = str(state / "vfroot" / "local" / "volume1")
    s["logging"]["console"]["colored"] = False
    (state / "storage-proxy").mkdir(exist_ok=True)
    (state / "storage-proxy" / "storage-proxy.toml").write_text(tomlkit.dumps(s))

    # the mock accelerator: four CUDA devices that do not exist (the agent reads this file from its cwd)
    mock = tomlkit.document()
    mock["slot_name"] = "cuda"
    mock["device_plugin_name"] = "CUDADevice"
    mock["formats"] = {"device": {"human_readable_name": "GPU", "description": "CUDA-capable GPU (mock)", "display_unit": "GPU",
                                  "number_format": {"binary": False, "round_length": 0}, "display_icon": "gpu1"}}
    mock["attributes"] = {"nvidia_driver": "525.00.00", "cuda_runtime": "12.0"}
    devices = tomlkit.aot()
    for i in range(4):
        dev = tomlkit.table()
        dev.update({"mother_uuid": f"00000000-0000-4000-8000-00000000000{i}", "model_name": "CUDA GPU (mock)", "numa_node": 0,
                    "subproc_count": 108, "memory_size": "16G", "is_mig_device": False})
        devices.append(dev)
    mock["devices"] = devices
    (state / "agent" / "mock-accelerator.toml").write_text(tomlkit.dumps(mock))

    volumes = {"volumes": {"_types": {"group": "", "user": ""}, "default_host": "local:volume1", "exposed_volume_info": "percentage",
                           "proxies": {"local": {"client_api": f"http://{lo}:{ports['storage_client']}",
                                                 "manager_api": f"https://{lo}:{ports['storage_manager']}",
                                                 "secret": ports["storage_manager_secret"], "ssl_verify": "false"}}}}
    (state / "etcd-volumes.json").write_text(json.dumps(volumes))
    config = {"api": {"allow-openapi-schema-introspection": "no", "allow-graphql-schema-introspection": "no"},
              "redis": {"addr": f"{lo}:{ports['redis']}",
                        "helper": {"socket_timeout": 5.0, "socket_connect_timeout": 2.0, "reconnect_poll_timeout": 0.3}}}
    (state / "etcd-config.json").write_text(json.dumps(config))
    alembic = (samples / "alembic.ini").read_text().replace("postgres:develove@localhost:8100", f"postgres@{lo}:{ports['postgres']}")
    (state / "alembic.ini").write_text(alembic)


if __name__ == "__main__":
    main()
