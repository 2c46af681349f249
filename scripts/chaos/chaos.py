#!/usr/bin/env python3
"""Fault harness: real `infermesh` processes, one per network namespace,
linked by veth pairs to a bridge in a namespace of its own (nothing is
added to the host's network). Every node writes keys to its own namespace
through its prompt while the harness

  - partitions the mesh in two (blackhole routes between the halves, both
    halves still writing), then heals it;
  - kills nodes with SIGKILL at random during writes and restarts them
    from their data directories.

Then it checks Jepsen's set-test rule on every replica: each node holds
every namespace, all nodes hold the same values, and no acknowledged
write (a key whose `updated` line the writer printed) is missing. It
prints what it did and what it found, and exits non-zero on any loss or
divergence.

Usage: chaos.py --binary target/debug/infermesh [--nodes 5] [--rounds 1]
                [--write-seconds 8] [--seed N]
"""

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

PORT_TCP, PORT_WS, PORT_WEBRTC = 4001, 4002, 4003


def sh(*args, check=True):
    result = subprocess.run(args, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Net:
    """Namespaces im<tag>n<i> for the nodes, im<tag>hub with the bridge."""

    def __init__(self, n, tag):
        self.tag = tag
        self.hub = f"im{tag}hub"
        self.names = [f"im{tag}n{i}" for i in range(n)]
        self.ips = [f"10.77.{int(tag, 16) % 250}.{i + 1}" for i in range(n)]
        self.blackholes = []

    def up(self):
        sh("ip", "netns", "add", self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, (ns, ip) in enumerate(zip(self.names, self.ips)):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", self.hub, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0")
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")

    def partition(self, side_a, side_b):
        for a in side_a:
            for b in side_b:
                for (x, y) in ((a, b), (b, a)):
                    sh("ip", "-n", self.names[x], "route", "add", "blackhole", f"{self.ips[y]}/32")
                    self.blackholes.append((x, y))

    def heal(self):
        for (x, y) in self.blackholes:
            sh("ip", "-n", self.names[x], "route", "del", "blackhole", f"{self.ips[y]}/32", check=False)
        self.blackholes = []

    def down(self):
        for ns in self.names + [self.hub]:
            sh("ip", "netns", "del", ns, check=False)


class Node:
    """One `infermesh init` process in a namespace, driven through its prompt."""

    def __init__(self, index, net, binary, workdir):
        self.index = index
        self.net = net
        self.binary = binary
        self.data_dir = os.path.join(workdir, f"node{index}")
        self.stderr_path = os.path.join(workdir, f"node{index}.log")
        self.proc = None
        self.peer_id = None
        self.lines = []
        self.cond = threading.Condition()
        self.lock = threading.Lock()  # one prompt command at a time

    @property
    def ip(self):
        return self.net.ips[self.index]

    def addr(self):
        return f"/ip4/{self.ip}/tcp/{PORT_TCP}/p2p/{self.peer_id}"

    def start(self, bootstrap):
        args = ["ip", "netns", "exec", self.net.names[self.index], self.binary, "init",
                "--data-dir", self.data_dir, "--listen-ip", self.ip,
                "--tcp-port", str(PORT_TCP), "--quic-port", str(PORT_TCP),
                "--ws-port", str(PORT_WS), "--webrtc-port", str(PORT_WEBRTC),
                "--no-api", "--no-mdns"]
        for addr in bootstrap:
            args += ["--bootstrap", addr]
        env = dict(os.environ, RUST_LOG=os.environ.get("CHAOS_RUST_LOG", "warn"))
        with self.cond:
            self.lines = []
        stderr = open(self.stderr_path, "a")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     text=True, bufsize=1, env=env)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        line = self.wait_line(lambda l: l.startswith("node ID: "), 30, "its node ID")
        self.peer_id = line.split("node ID: ", 1)[1].strip()

    def _read(self, proc):
        for line in proc.stdout:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_line(self, pred, timeout, what, after=0):
        deadline = time.time() + timeout
        with self.cond:
            while True:
                for line in self.lines[after:]:
                    if pred(line):
                        return line
                remaining = deadline - time.time()
                if remaining <= 0 or not self.alive():
                    raise TimeoutError(f"node {self.index}: no {what}")
                self.cond.wait(min(remaining, 0.5))

    def ask(self, command, pred, timeout, what):
        with self.lock:
            with self.cond:
                start = len(self.lines)
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return self.wait_line(pred, timeout, what, after=start)

    def write(self, key, value):
        """True once the node printed the write's acknowledgement."""
        line = self.ask(f"update {key} {value}",
                        lambda l: l.startswith(f"updated {key} =") or l.startswith("error:"), 15, f"ack of {key}")
        return line.startswith("updated ")

    def state(self, namespace):
        with self.lock:
            with self.cond:
                start = len(self.lines)
            self.proc.stdin.write(f"state {namespace}\n")
            self.proc.stdin.flush()
            self.wait_line(lambda l: l == "}", 15, "a state report", after=start)
            with self.cond:
                lines = self.lines[start:]
        first = lines.index("{")
        last = lines.index("}", first)
        return json.loads("\n".join(lines[first:last + 1]))["data"]

    def peers(self):
        line = self.ask("status", lambda l: l.startswith("peers:"), 15, "status")
        return int(line.split()[1])

    def kill9(self):
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.alive():
            try:
                self.proc.stdin.write("exit\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except Exception:
                self.kill9()


class Writers:
    """One writer per node, writing keys w<node>-<n> to its own namespace."""

    def __init__(self, nodes):
        self.nodes = nodes
        self.acked = {n.index: set() for n in nodes}
        self.sent = {n.index: 0 for n in nodes}
        self.failed = 0
        self.running = False
        self.threads = []
        self.seq = {n.index: 0 for n in nodes}

    def start(self):
        self.running = True
        self.threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in self.nodes]
        for t in self.threads:
            t.start()

    def stop(self):
        self.running = False
        for t in self.threads:
            t.join()

    def _run(self, node):
        while self.running:
            if not node.alive():
                time.sleep(0.05)
                continue
            n = self.seq[node.index]
            key = f"w{node.index}-{n}"
            self.seq[node.index] += 1
            self.sent[node.index] += 1
            try:
                if node.write(key, n):
                    self.acked[node.index].add(key)
                else:
                    self.failed += 1
            except (TimeoutError, BrokenPipeError, ValueError, OSError):
                # Killed mid-write: not acknowledged, may or may not exist.
                self.failed += 1


def check(nodes, writers, deadline_s):
    """Waits for every replica to agree and hold every acknowledged write."""
    deadline = time.time() + deadline_s
    problems = []
    while True:
        problems = []
        views = {}
        for reader in nodes:
            for owner in nodes:
                try:
                    views[(reader.index, owner.index)] = reader.state(owner.peer_id)
                except (TimeoutError, ValueError) as e:
                    problems.append(f"node {reader.index} could not report {owner.index}'s state: {e}")
        for owner in nodes:
            acked = writers.acked[owner.index]
            for reader in nodes:
                data = views.get((reader.index, owner.index), {})
                missing = acked - set(data)
                if missing:
                    problems.append(f"node {reader.index} lacks {len(missing)} acknowledged keys of node "
                                    f"{owner.index} (e.g. {sorted(missing)[:3]})")
            reference = views.get((owner.index, owner.index))
            for reader in nodes:
                if views.get((reader.index, owner.index)) != reference:
                    problems.append(f"node {reader.index}'s replica of node {owner.index} differs from the owner's")
        if not problems or time.time() > deadline:
            return problems, views
        time.sleep(1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--write-seconds", type=float, default=8)
    parser.add_argument("--converge-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tag = f"{os.getpid() % 0xfff:03x}"
    log(f"chaos: {args.nodes} nodes, {args.rounds} round(s), seed {args.seed}")

    try:
        sh("ip", "netns", "add", f"im{tag}probe")
        sh("ip", "netns", "del", f"im{tag}probe")
    except (RuntimeError, FileNotFoundError) as e:
        log(f"SKIPPED: network namespaces are not available here ({e})")
        return 0

    net = Net(args.nodes, tag)
    workdir = tempfile.mkdtemp(prefix="infermesh-chaos-")
    nodes = [Node(i, net, os.path.abspath(args.binary), workdir) for i in range(args.nodes)]
    started = time.time()
    try:
        net.up()
        log(f"network: {args.nodes} namespaces on a bridge, {net.ips[0]}…{net.ips[-1]}")
        nodes[0].start([])
        for node in nodes[1:]:
            node.start([nodes[0].addr()])
        bootstrap = [nodes[0].addr()]
        deadline = time.time() + 60
        while any(n.peers() < 1 for n in nodes):
            if time.time() > deadline:
                raise RuntimeError("the mesh did not form")
            time.sleep(0.5)
        log("mesh formed: every node has a peer")

        writers = Writers(nodes)
        kills = 0
        for round_ in range(1, args.rounds + 1):
            # Partition while both halves write.
            order = list(range(args.nodes))
            rng.shuffle(order)
            half = args.nodes // 2
            side_a, side_b = sorted(order[:half]), sorted(order[half:])
            writers.start()
            time.sleep(args.write_seconds / 4)
            net.partition(side_a, side_b)
            time.sleep(0.5)
            before = {i: set(keys) for i, keys in writers.acked.items()}
            log(f"round {round_}: partitioned {side_a} | {side_b}; both sides write")
            time.sleep(args.write_seconds)
            # The partition holds: a node on one side has not seen what
            # the other side wrote meanwhile.
            a, b = nodes[side_a[0]], nodes[side_b[0]]
            during = {k for k in writers.acked[b.index] if k not in before[b.index]}
            seen = set(a.state(b.peer_id)) & during
            if not during or len(seen) == len(during):
                raise RuntimeError(f"the partition did not hold: node {a.index} saw {len(seen)} of the "
                                   f"{len(during)} keys node {b.index} wrote during it")
            log(f"round {round_}: node {a.index} saw {len(seen)} of {len(during)} keys node {b.index} wrote across it")
            net.heal()
            log(f"round {round_}: healed")
            # Kill -9 and restart during writes.
            victims = rng.sample(range(args.nodes), k=min(2, args.nodes))
            for victim in victims:
                time.sleep(rng.uniform(0.2, args.write_seconds / 4))
                nodes[victim].kill9()
                kills += 1
                log(f"round {round_}: kill -9 node {victim}")
                time.sleep(rng.uniform(0.5, 2))
                nodes[victim].start([] if victim == 0 else bootstrap)
                log(f"round {round_}: restarted node {victim}")
            time.sleep(args.write_seconds / 4)
            writers.stop()
            acked = sum(len(a) for a in writers.acked.values())
            sent = sum(writers.sent.values())
            log(f"round {round_}: {sent} writes sent, {acked} acknowledged so far")

        log(f"checking convergence (up to {args.converge_seconds:.0f} s)…")
        t0 = time.time()
        problems, views = check(nodes, writers, args.converge_seconds)
        elapsed = time.time() - t0
        acked = sum(len(a) for a in writers.acked.values())
        held = sum(len(views.get((0, o.index), {})) for o in nodes)
        if problems:
            log(f"FOUND {len(problems)} problem(s) after {elapsed:.1f} s:")
            for p in problems[:20]:
                log(f"  - {p}")
            for node in nodes:
                log(f"  (node {node.index} log: {node.stderr_path})")
            return 1
        log(f"found: all {args.nodes} replicas of all {args.nodes} namespaces agree after {elapsed:.1f} s; "
            f"all {acked} acknowledged writes present ({held} keys in all, {writers.failed} writes unacknowledged "
            f"around kills), {kills} kill -9, {args.rounds} partition(s); {time.time() - started:.0f} s in all")
        return 0
    finally:
        for node in nodes:
            node.stop()
        net.down()


if __name__ == "__main__":
    sys.exit(main())
