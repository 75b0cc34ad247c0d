#!/usr/bin/env python3
"""Three Docker engines on this one machine, for the cluster phase: each in a network namespace of its own, joined
by veth pairs to a bridge, with its own dockerd (--data-root, --exec-root, --pidfile, socket), and Debian's
docker-registry (distribution 2.8) on the bridge, which every engine pulls from.

    python3 tests/e2e/cluster.py up      # start one (prints its addresses; for debugging)
    python3 tests/e2e/cluster.py down    # remove every cluster this machine holds whose owner has ended
    python3 tests/e2e/cluster.py sweep   # the same (run.sh calls it at the start and at the end of a run)

Layout: the bridge NAMEbr holds 10.231.K.1/24 on the host (the clients of the load and `skopeo` reach the nodes
and the registry through it); node i is 10.231.K.(10+i) in the namespace NAMEni. Nothing routes that range
anywhere else: the namespaces have no default route, and the one FORWARD rule added lets traffic through the
bridge only between its own ports (Docker's FORWARD policy is DROP). The registry listens on 10.231.K.1:5000.
Everything is described by a state directory /run/dse2e-cluster/NAME (the owner's pid, the subnet, the pids), so
that a run stopped by SIGKILL is cleaned up by the next sweep; `down` of a cluster whose owner is alive is refused.
"""

import atexit
import ipaddress
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

STATE_ROOT = "/run/dse2e-cluster"    # sockets, pids, exec roots: short paths (a unix socket path has 108 bytes)
DATA_ROOT = "/var/lib/dse2e-cluster"  # the engines' data roots and the registry's storage (a real disk: overlay2)
SUBNET_BASE = "10.231"                # 10.231.K.0/24, K free on this machine
POOL = "10.232.0.0/16"                # Swarm's overlay subnets (its default, 10.0.0.0/8, would include the bridge's)
NODES = 3
REGISTRY_PORT = 5000


def sh(cmd, check=True, timeout=120, env=None, quiet=False):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-600:]}")
    return p


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, TypeError):
        return False
    except PermissionError:
        return True


def missing_tools():
    """What this module needs and is not installed, each with what to install."""
    need = {"ip": "iproute2", "nsenter": "util-linux", "iptables": "iptables", "dockerd": "docker.io",
            "docker-registry": "docker-registry (Debian's distribution 2.8)", "skopeo": "skopeo"}
    return [f"{tool} (apt-get install {pkg})" for tool, pkg in need.items()
            if not any(os.access(os.path.join(d, tool), os.X_OK) for d in os.environ.get("PATH", "").split(":")
                       + ["/usr/sbin", "/sbin"])]


class Node:
    def __init__(self, cluster, i):
        self.i = i
        self.name = f"n{i}"
        self.netns = f"{cluster.name}n{i}"
        self.veth = f"{cluster.name}v{i}"
        self.addr = f"{cluster.prefix}.{10 + i}"
        self.exec_root = os.path.join(cluster.state, self.name)
        self.data_root = os.path.join(cluster.data, self.name)
        self.sock = os.path.join(cluster.state, f"{self.name}.sock")
        self.pidfile = os.path.join(cluster.state, f"{self.name}.pid")
        self.log = os.path.join(cluster.state, f"{self.name}.log")
        self.cgroup = f"/{cluster.name}{self.name}"
        self.host = f"unix://{self.sock}"
        self.node_id = None

    def env(self, base=None):
        env = dict(base if base is not None else os.environ)
        env["DOCKER_HOST"] = self.host
        env.pop("DOCKER_CONTEXT", None)
        return env

    def docker(self, *args, timeout=120, check=False, env=None):
        return sh(["docker", *args], check=check, timeout=timeout, env=self.env(env))

    def pid(self):
        try:
            return int(open(self.pidfile).read().strip())
        except (OSError, ValueError):
            return None


class Cluster:
    """The namespaces, bridge, engines and registry of one run. up() makes them, down() removes them (also after a
    failure midway: every step is recorded first in the state directory)."""

    def __init__(self, name=None):
        self.name = name or f"dse{uuid.uuid4().hex[:5]}"  # ≤ 8 characters: interface names have 15
        self.state = os.path.join(STATE_ROOT, self.name)
        self.data = os.path.join(DATA_ROOT, self.name)
        self.bridge = f"{self.name}br"
        self.prefix = None
        self.registry_proc = None
        self.forward_rule = None
        self.nodes = []

    # ---- state ---------------------------------------------------------------------------------------------
    def _save(self, **kv):
        path = os.path.join(self.state, "state.json")
        st = self._load()
        st.update(kv)
        with open(path + ".tmp", "w") as f:
            json.dump(st, f)
        os.replace(path + ".tmp", path)

    def _load(self):
        try:
            return json.load(open(os.path.join(self.state, "state.json")))
        except (OSError, ValueError):
            return {}

    @property
    def registry(self):
        return f"{self.prefix}.1:{REGISTRY_PORT}"

    @property
    def bridge_addr(self):
        return f"{self.prefix}.1"

    # ---- up ------------------------------------------------------------------------------------------------
    def _pick_subnet(self):
        taken = set()
        for d in os.listdir(STATE_ROOT) if os.path.isdir(STATE_ROOT) else []:
            st = Cluster(d)._load()
            if st.get("prefix"):
                taken.add(st["prefix"])
        routes = sh(["ip", "-4", "route", "show", "table", "all"], check=False).stdout + \
            sh(["ip", "-4", "addr"], check=False).stdout
        nets = []
        for word in routes.split():
            try:
                nets.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                pass
        for k in range(22, 120):
            prefix = f"{SUBNET_BASE}.{k}"
            net = ipaddress.ip_network(f"{prefix}.0/24")
            # Any route or address of this machine inside that /24 (or a more specific one covering it) rules it
            # out; the default route (0.0.0.0/0) does not.
            if prefix not in taken and not any(n.prefixlen > 0 and n.overlaps(net) for n in nets):
                return prefix
        raise RuntimeError(f"no free {SUBNET_BASE}.K.0/24 on this machine")

    def up(self, log=print):
        os.makedirs(self.state, mode=0o700)
        os.makedirs(self.data, mode=0o700, exist_ok=True)
        self.prefix = self._pick_subnet()
        self._save(owner=os.getpid(), prefix=self.prefix, bridge=self.bridge, netns=[], pids={})
        self.nodes = [Node(self, i) for i in range(1, NODES + 1)]
        # The bridge, with the host's address on it, and the FORWARD rule letting its ports talk to each other.
        sh(["ip", "link", "add", self.bridge, "type", "bridge"])
        sh(["ip", "addr", "add", f"{self.bridge_addr}/24", "dev", self.bridge])
        sh(["ip", "link", "set", self.bridge, "up"])
        self.forward_rule = ["FORWARD", "-i", self.bridge, "-o", self.bridge, "-j", "ACCEPT"]
        sh(["iptables", "-I", *self.forward_rule[:1], "1", *self.forward_rule[1:]])
        self._save(forward_rule=self.forward_rule)
        for n in self.nodes:
            self._save(netns=self._load()["netns"] + [n.netns])
            sh(["ip", "netns", "add", n.netns])
            sh(["ip", "link", "add", n.veth, "type", "veth", "peer", "name", f"{n.veth}p"])
            sh(["ip", "link", "set", f"{n.veth}p", "netns", n.netns])
            sh(["ip", "link", "set", n.veth, "master", self.bridge, "up"])
            ns = ["ip", "-n", n.netns]
            sh([*ns, "link", "set", f"{n.veth}p", "name", "eth0"])
            sh([*ns, "addr", "add", f"{n.addr}/24", "dev", "eth0"])
            sh([*ns, "link", "set", "eth0", "up"])
            sh([*ns, "link", "set", "lo", "up"])
        self._start_registry()
        for n in self.nodes:
            self._start_dockerd(n)
        for n in self.nodes:
            self._wait_dockerd(n)
        log(f"cluster {self.name}: bridge {self.bridge} {self.bridge_addr}/24, nodes "
            + ", ".join(f"{n.name} {n.addr} ({n.netns})" for n in self.nodes) + f", registry {self.registry}")
        return self

    def _start_registry(self):
        cfg = os.path.join(self.state, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
                    f"storage:\n  filesystem:\n    rootdirectory: {self.data}/registry\n  delete:\n    enabled: true\n"
                    f"http:\n  addr: {self.registry}\n")
        out = open(os.path.join(self.state, "registry.log"), "w")
        self.registry_proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True)
        self._save(registry_pid=self.registry_proc.pid)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://{self.registry}/v2/", timeout=2) as r:
                    if r.status == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            if self.registry_proc.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"docker-registry did not answer on {self.registry}: "
                           + open(os.path.join(self.state, "registry.log")).read()[-600:])

    def _start_dockerd(self, n):
        os.makedirs(n.exec_root, mode=0o700, exist_ok=True)
        os.makedirs(n.data_root, mode=0o700, exist_ok=True)
        cfg = os.path.join(self.state, f"{n.name}.json")
        with open(cfg, "w") as f:  # its own (empty) file: never the host's /etc/docker/daemon.json
            f.write("{}\n")
        # nsenter --net only: `ip netns exec` also remounts /sys, which hides the cgroup mounts dockerd needs. A UTS
        # namespace of its own gives each node its own hostname (`docker node ls`, `docker service ps` show it).
        cmd = ["nsenter", f"--net=/run/netns/{n.netns}", "unshare", "--uts", "--", "sh", "-c",
               'hostname "$0" && exec "$@"', f"{self.name}-{n.name}", "dockerd",
               "--host", n.host, "--data-root", n.data_root, "--exec-root", n.exec_root, "--pidfile", n.pidfile,
               "--config-file", cfg, "--insecure-registry", self.registry, "--cgroup-parent", n.cgroup,
               "--containerd-namespace", f"{self.name}{n.name}",
               "--containerd-plugins-namespace", f"{self.name}{n.name}p", "--log-level", "warn"]
        out = open(n.log, "w")
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        pids = self._load().get("pids", {})
        pids[n.name] = p.pid  # nsenter, unshare and sh each exec the next: dockerd has this pid
        self._save(pids=pids)

    def _wait_dockerd(self, n, timeout=90):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if n.docker("info", "--format", "{{.ID}}", timeout=10).returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"dockerd of {n.name} did not answer within {timeout} s: " + open(n.log).read()[-800:])

    # ---- the swarm -------------------------------------------------------------------------------------------
    def swarm(self, managers=3):
        first = self.nodes[0]
        first.docker("swarm", "init", "--advertise-addr", first.addr, "--listen-addr", f"{first.addr}:2377",
                     "--default-addr-pool", POOL, check=True)
        tokens = {}
        for role in ("manager", "worker"):
            tokens[role] = first.docker("swarm", "join-token", "-q", role, check=True).stdout.strip()
        for i, n in enumerate(self.nodes[1:], start=2):
            role = "manager" if i <= managers else "worker"
            n.docker("swarm", "join", "--token", tokens[role], "--advertise-addr", n.addr,
                     "--listen-addr", f"{n.addr}:2377", f"{first.addr}:2377", check=True, timeout=120)
        for n in self.nodes:
            n.node_id = n.docker("info", "--format", "{{.Swarm.NodeID}}", check=True).stdout.strip()

    # ---- losing a node ---------------------------------------------------------------------------------------
    def node_processes(self, n):
        """Every process of node n: those in its network namespace (dockerd, containerd, the shims) and all their
        descendants (the containers' processes, in namespaces of their own)."""
        try:
            target = os.stat(f"/run/netns/{n.netns}").st_ino
        except OSError:
            return set()
        children, roots = {}, set()
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                if os.stat(f"/proc/{d}/ns/net").st_ino == target:
                    roots.add(int(d))
                stat = open(f"/proc/{d}/stat").read()
                ppid = int(stat[stat.rindex(")") + 2:].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                continue
        out, todo = set(), list(roots)
        while todo:
            p = todo.pop()
            if p not in out:
                out.add(p)
                todo.extend(children.get(p, []))
        return out

    def kill_node(self, n):
        """A machine that stops: its link is cut (its address answers nothing any more) and every process of it gets
        SIGKILL at once (stopped first, so that nothing restarts another). Returns how many processes."""
        sh(["ip", "link", "set", n.veth, "down"])
        procs = self.node_processes(n)
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in sorted(procs | self.node_processes(n)):
                try:
                    os.kill(p, sig)
                except ProcessLookupError:
                    pass
        return len(procs)

    # ---- down ------------------------------------------------------------------------------------------------
    def down(self, log=print):
        st = self._load()
        self.prefix = st.get("prefix")
        self.nodes = [Node(self, i) for i in range(1, NODES + 1)]
        problems = []
        # The engines: SIGTERM (dockerd stops its containers and unmounts), then whatever is left gets SIGKILL.
        for n in self.nodes:
            pid = n.pid() or st.get("pids", {}).get(n.name)
            if pid and alive(pid):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 30
        for n in self.nodes:
            pid = n.pid() or st.get("pids", {}).get(n.name)
            while pid and alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
                try:  # reap it if it is our child
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        for n in self.nodes:
            if os.path.exists(f"/run/netns/{n.netns}"):
                for p in self.node_processes(n):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        rpid = st.get("registry_pid")
        if rpid and alive(rpid):
            os.kill(rpid, signal.SIGTERM)
            for _ in range(50):
                if not alive(rpid):
                    break
                try:
                    os.waitpid(rpid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.1)
            if alive(rpid):
                os.kill(rpid, signal.SIGKILL)
        # Mounts the engines left (overlay layers, container namespaces, secrets' tmpfs): deepest first.
        for _ in range(3):
            mounts = [line.split()[4] for line in open("/proc/self/mountinfo")]
            ours = sorted({m for m in mounts if m.startswith((self.state + "/", self.data + "/"))},
                          key=len, reverse=True)
            if not ours:
                break
            for m in ours:
                sh(["umount", "-l", m], check=False)
        for ns in sorted(set(st.get("netns", [])) | {n.netns for n in self.nodes}):
            if os.path.exists(f"/run/netns/{ns}"):
                p = sh(["ip", "netns", "del", ns], check=False)
                if p.returncode != 0:
                    problems.append(f"netns {ns}: {p.stderr.strip()}")
        # The host's ends of the veths too: a namespace outlives its `ip netns del` while sockets made in it are
        # still closing (the TCP connections between the engines, killed mid-way), and so would its veth pair.
        for link in [self.bridge] + [n.veth for n in self.nodes]:
            if os.path.exists(f"/sys/class/net/{link}"):
                sh(["ip", "link", "del", link], check=False)
        rule = st.get("forward_rule")
        while rule and sh(["iptables", "-C", *rule], check=False).returncode == 0:
            sh(["iptables", "-D", *rule], check=False)
        # cgroups of the containers (--cgroup-parent), empty once their processes are gone.
        for n in self.nodes:
            for ctrl in os.listdir("/sys/fs/cgroup") if os.path.isdir("/sys/fs/cgroup") else []:
                top = os.path.join("/sys/fs/cgroup", ctrl, n.cgroup.lstrip("/"))
                if os.path.isdir(top) and not os.path.islink(os.path.join("/sys/fs/cgroup", ctrl)):
                    for root, dirs, _ in sorted(os.walk(top), key=lambda w: -len(w[0])):
                        try:
                            os.rmdir(root)
                        except OSError:
                            pass
                    if os.path.isdir(top):
                        problems.append(f"cgroup {top} still there")
        sh(["rm", "-rf", "--one-file-system", self.data], check=False)
        sh(["rm", "-rf", "--one-file-system", self.state], check=False)
        left = [n.netns for n in self.nodes if os.path.exists(f"/run/netns/{n.netns}")]
        left += [link for link in [self.bridge] + [n.veth for n in self.nodes]
                 if os.path.exists(f"/sys/class/net/{link}")]
        if os.path.exists(self.state) or os.path.exists(self.data):
            left.append("directories")
        problems += [f"left: {x}" for x in left]
        log(f"cluster {self.name}: removed" + (f" ({'; '.join(problems)})" if problems else ""))
        return not problems


# ---- the registry: what `nix run .#push -- REGISTRY VERSION` writes --------------------------------------------------
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
INDEX_TYPE = "application/vnd.oci.image.index.v1+json"


def _registry_call(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, dict(r.headers), r.read()


def push_release(registry, version, local, log=print):
    """The layout of nix/apps.nix's push: each image under REGISTRY/<name>:VERSION-<arch> (push-arch, with skopeo as
    the flake's copyTo is), then REGISTRY/<name>:VERSION, an OCI index listing that architecture (push-index).
    `local`: {image name in nix/image.json, e.g. docker-sample/app: the local image to push, name:tag}. The registry
    is plain HTTP here (--dest-tls-verify=false), as the engines' --insecure-registry says. Returns {name: digest of
    the index}."""
    host, _, path = registry.partition("/")
    out = {}
    for name, ref in local.items():
        info = json.loads(sh(["docker", "image", "inspect", ref], timeout=60).stdout)[0]
        arch, os_ = info.get("Architecture") or "amd64", info.get("Os") or "linux"
        repo = f"{path}/{name}" if path else name
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-daemon:{ref}",
            f"docker://{host}/{repo}:{version}-{arch}"], timeout=600)
        status, headers, body = _registry_call("GET", f"http://{host}/v2/{repo}/manifests/{version}-{arch}",
                                               headers={"Accept": ", ".join(MANIFEST_TYPES)})
        child = {"mediaType": headers.get("Content-Type", MANIFEST_TYPES[1]).split(";")[0],
                 "digest": headers["Docker-Content-Digest"], "size": len(body),
                 "platform": {"architecture": arch, "os": os_}}
        index = json.dumps({"schemaVersion": 2, "mediaType": INDEX_TYPE, "manifests": [child]}).encode()
        _, headers, _ = _registry_call("PUT", f"http://{host}/v2/{repo}/manifests/{version}", body=index,
                                       headers={"Content-Type": INDEX_TYPE})
        out[name] = headers.get("Docker-Content-Digest")
        log(f"pushed {ref} as {host}/{repo}:{version}-{arch} and the index {host}/{repo}:{version}@{out[name]}")
    return out


def push_plain(registry, local_ref, remote_name):
    """One image under one tag (the PostgreSQL and Redis stand-ins: production pulls the official images)."""
    host, _, path = registry.partition("/")
    ref = f"{host}/{path}/{remote_name}" if path else f"{host}/{remote_name}"
    sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"docker-daemon:{local_ref}", f"docker://{ref}"],
       timeout=600)
    return ref


def sweep(log=print, include_alive=False):
    """Removes every cluster whose owner process has ended (a run killed before it could clean up). Also those
    whose owner is alive with include_alive (never used by the suite: a concurrent run's cluster is left alone)."""
    ok = True
    names = set(os.listdir(STATE_ROOT)) if os.path.isdir(STATE_ROOT) else set()
    names |= set(os.listdir(DATA_ROOT)) if os.path.isdir(DATA_ROOT) else set()
    # Interfaces and namespaces of a cluster whose state directory is gone (removed by hand, say).
    pattern = re.compile(r"^(dse[0-9a-f]{5})(br|v\d|n\d)$")
    for entry in os.listdir("/sys/class/net") + (os.listdir("/run/netns") if os.path.isdir("/run/netns") else []):
        m = pattern.match(entry)
        if m:
            names.add(m.group(1))
    for name in sorted(names):
        c = Cluster(name)
        owner = c._load().get("owner")
        if owner and alive(owner) and owner != os.getpid() and not include_alive:
            continue
        ok = c.down(log=log) and ok
    return ok


def start(log=print):
    """up() with removal on every way out: an exception midway, the interpreter's exit, SIGTERM and SIGINT."""
    c = Cluster()
    done = []

    def remove():
        if not done:
            done.append(c.down(log=log))
        return done[0]

    atexit.register(remove)
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            remove()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(128 + signum)

        signal.signal(sig, handler)
    try:
        c.up(log=log)
    except BaseException:
        remove()
        raise
    c.remove = remove
    return c


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "up":
        c = Cluster().up()
        print(f"remove with: python3 {sys.argv[0]} down")
    elif what in ("down", "sweep"):
        sys.exit(0 if sweep() else 1)
    else:
        sys.exit(__doc__)
