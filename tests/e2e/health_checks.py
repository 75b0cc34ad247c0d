"""The load balancer's active health check, as the README's "Past one machine" recipe asks of the balancer in front
of the nodes: GET http://NODE:EDGE_PORT/edge-health on every node several times a second; a node that answers
anything but 200 (its edge is draining: DRAIN_SECONDS) or does not answer gets no new connection until it passes
again (harness.mark_down). Connections already open to it go on: the edge still serves them during its drain."""

import http.client
import threading

from harness import mark_down

INTERVAL = 0.2


class HealthChecks:
    def __init__(self, addrs, http_port):
        self.addrs, self.http_port = list(addrs), http_port
        self.stop = threading.Event()
        self.failed = {addr: 0 for addr in self.addrs}  # checks that failed, per node
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _healthy(self, addr):
        conn = http.client.HTTPConnection(addr, self.http_port, timeout=1)
        try:
            conn.request("GET", "/edge-health", headers={"Host": addr})
            return conn.getresponse().status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _loop(self):
        while not self.stop.is_set():
            for addr in self.addrs:
                if not self._healthy(addr):
                    self.failed[addr] += 1
                    mark_down(addr)
            self.stop.wait(INTERVAL)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
