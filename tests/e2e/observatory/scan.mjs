// Runs Mozilla's HTTP Observatory scanner (npm @mdn/mdn-http-observatory, its JS API `scan`) against a stack on
// this machine, and prints one JSON document on stdout. Called by tests/e2e/observatory.py; by hand:
//
//   NODE_EXTRA_CA_CERTS=secrets/tls-ca.crt node tests/e2e/observatory/scan.mjs \
//       --package target/observatory/node_modules/@mdn/mdn-http-observatory \
//       --host localhost --http-port 8001 --https-port 8443
//
// The scanner always fetches http://HOST/ and https://HOST/ (ports 80 and 443: its `scan()` has no port option).
// Before loading it, this script redirects, inside this Node process only, every TCP connection to HOST:80 to
// ADDRESS:HTTP_PORT and HOST:443 to ADDRESS:HTTPS_PORT (ADDRESS: 127.0.0.1 by default); HOST on any other port
// goes to ADDRESS on that same port (e.g. a redirect to https://HOST:8443/). It is what an /etc/hosts line plus a
// port forward would do, for this process only: no root, no free port 80/443, nothing changed on the machine. The
// scanner still sees HOST everywhere: its URLs, the Host header, TLS SNI and the certificate's name check. A
// connection to any other host is refused (the scan talks to the stack, nothing else). The certificate must be
// valid for HOST and chain to a CA that Node trusts: give the test CA in NODE_EXTRA_CA_CERTS (read by Node at
// start, so it is set by the caller); without it the scanner retries unverified and fails HSTS and redirection.
//
// Output: {"scan": {...grade, score, testsFailed...}, "tests": {name: {pass, result, scoreModifier,
// scoreDescription, ...}}, "connections": ["localhost:443 -> 127.0.0.1:8443", ...]} or {"error": "..."} with exit 1.

import net from "node:net";
import path from "node:path";
import { pathToFileURL } from "node:url";

function usage(msg) {
  process.stderr.write(`scan.mjs: ${msg}\nusage: node scan.mjs --package DIR --host HOST --http-port N ` +
    `--https-port N [--address 127.0.0.1]\n`);
  process.exit(2);
}

const args = { address: "127.0.0.1" };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  const key = argv[i]?.replace(/^--/, "");
  if (!["package", "host", "http-port", "https-port", "address"].includes(key) || argv[i + 1] === undefined) {
    usage(`bad argument ${argv[i]}`);
  }
  args[key] = argv[i + 1];
}
for (const key of ["package", "host", "http-port", "https-port"]) {
  if (!args[key]) usage(`--${key} is required`);
}
const HOST = args.host.toLowerCase();
const ADDRESS = args.address;
const PORTS = new Map([[80, Number(args["http-port"])], [443, Number(args["https-port"])]]);
if (![...PORTS.values()].every((p) => Number.isInteger(p) && p > 0 && p < 65536)) usage("bad port");
if (!net.isIP(ADDRESS)) usage(`--address must be an IP address, not ${ADDRESS}`);

// --- the connection map: every TCP connection of this process goes through net.Socket.prototype.connect (plain
// sockets of http.Agent and the TLSSocket of tls.connect alike), given an options object, or the array that
// net.connect() normalized (options first).
const connections = [];
const originalConnect = net.Socket.prototype.connect;
net.Socket.prototype.connect = function (...callArgs) {
  let holder = null; // [container, index] of the options object
  if (Array.isArray(callArgs[0]) && callArgs[0][0] && typeof callArgs[0][0] === "object") {
    holder = [callArgs[0], 0];
  } else if (callArgs[0] && typeof callArgs[0] === "object" && !Array.isArray(callArgs[0])) {
    holder = [callArgs, 0];
  }
  const options = holder ? holder[0][holder[1]] : null;
  if (!options || options.path) {
    // (port, host) form or a Unix socket: the scanner makes neither.
    throw new Error(`scan.mjs: unexpected connect(${JSON.stringify(callArgs[0])}): refused`);
  }
  const host = String(options.host ?? "localhost").toLowerCase().replace(/^\[|\]$/g, "");
  const port = Number(options.port);
  if (host !== HOST && host !== ADDRESS) {
    connections.push(`${host}:${port} refused`);
    const err = new Error(`scan.mjs: connection to ${host}:${port} refused (only ${HOST} is scanned)`);
    err.code = "ECONNREFUSED";
    process.nextTick(() => this.destroy(err));
    return this;
  }
  const target = host === HOST ? PORTS.get(port) ?? port : port;
  connections.push(`${host}:${port} -> ${ADDRESS}:${target}`);
  holder[0][holder[1]] = { ...options, host: ADDRESS, port: target, lookup: undefined };
  return originalConnect.apply(this, callArgs);
};

try {
  const entry = path.resolve(args.package, "src", "index.js");
  const { scan } = await import(pathToFileURL(entry).href);
  const result = await scan(HOST);
  process.stdout.write(JSON.stringify({ scan: result.scan, tests: result.tests, connections }, null, 2) + "\n");
} catch (e) {
  process.stdout.write(JSON.stringify({ error: e instanceof Error ? e.message : String(e), connections }) + "\n");
  process.exit(1);
}
