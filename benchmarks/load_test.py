"""Load-test `lenet5 serve` over loopback: single-client latency and 16-client throughput of
`POST /api/predict` with a drawing's PNG, as the page sends it.

    python benchmarks/load_test.py RUN_OR_MODEL [--engine numpy] [--clients 16] [--runs 7] ...
    python benchmarks/load_test.py --url http://127.0.0.1:8000   # a server already running

With a model it starts `lenet5 serve MODEL --port 0` in its own process (the clients run in
this one; --workers N is passed on) and stops it afterwards. Only loopback addresses are
accepted. Every phase is bounded by a request count and by --max-seconds. `--photos N` also
POSTs N held-out photographed digits and compares the answers with `lenet5 predict` (run with
PYTHONPATH=src or lenet5 installed). Writes benchmarks/results/load_test.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

from common import child_env, machine, write_results
from PIL import Image, ImageDraw

RESULTS = Path(__file__).parent / "results" / "load_test.md"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
TARGET_P95_MS = 30.0
TARGET_RPS = 450.0
"""Issue 17: 32 keep-alive clients, in every run (each against a server started afresh)."""


def canvas_png(height: int, aspect: float = 1.0) -> bytes:
    """A "7" drawn as the page draws it: round strokes of ink #111, 7.5% of the height wide,
    anti-aliased, on a white pad `aspect` times as wide as tall, in its middle; sent as the
    page sends it, a grey PNG."""
    scale = 4  # drawn larger, then shrunk: anti-aliased edges, as a browser's canvas has
    side = scale * height
    img = Image.new("L", (round(aspect * side), side), 255)
    pen, ink = ImageDraw.Draw(img), 17
    left = (img.width - side) / 2
    points = [(left + 0.28 * side, 0.22 * side), (left + 0.72 * side, 0.22 * side),
              (left + 0.44 * side, 0.82 * side)]
    width = round(0.075 * side)
    pen.line(points, fill=ink, width=width, joint="curve")
    for x, y in (points[0], points[-1]):  # round caps
        pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=ink)
    return grey_png(img.resize((round(aspect * height), height), Image.Resampling.LANCZOS))


def grey_png(grey: Image.Image) -> bytes:
    """An 8-bit grey PNG with unfiltered rows, deflated at zlib's default level, as the page's
    greyPng writes one (Pillow would filter the rows)."""
    pixels, width = grey.tobytes(), grey.width
    rows = b"".join(b"\0" + pixels[y * width:(y + 1) * width] for y in range(grey.height))

    def chunk(kind: bytes, data: bytes) -> bytes:  # as the server's own: this script does
        # not import lenet5 (--url tests a server running elsewhere)
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", grey.width, grey.height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))


class Client:
    """One keep-alive HTTP/1.1 connection posting images (by default the same drawing), on
    a bare socket: http.client spent 0.35 ms of CPU on a request here (it parses headers with
    the email package), a tenth of the 2 cores the server shares with it; this spends 0.1 ms."""

    def __init__(self, host: str, port: int, body: bytes):
        self.address = host, port
        self.host = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
        self.body = body
        self.sock: socket.socket | None = None  # connected at a post, when not connected
        self.unread = b""  # bytes received and not read yet

    def post(self, body: bytes | None = None, content_type: str = "image/png"
             ) -> tuple[float, int, dict[str, float], bytes]:
        """(seconds, status, Server-Timing stages in ms, body)."""
        body = self.body if body is None else body
        started = time.perf_counter()
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as browsers do
            self.unread = b""
        self.sock.sendall(f"POST /api/predict HTTP/1.1\r\nHost: {self.host}\r\n"
                          f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
                          .encode("ascii") + body)
        status, headers = self._head()
        if "content-length" not in headers:
            raise ConnectionError(f"HTTP {status} without Content-Length: not what the server "
                                  "under test answers")
        data = self._read(int(headers["content-length"]))
        seconds = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            self.close()
        stages = {}
        for part in filter(None, headers.get("server-timing", "").split(",")):
            name, _, duration = part.strip().partition(";dur=")
            stages[name] = float(duration)
        return seconds, status, stages, data

    def _head(self) -> tuple[int, dict[str, str]]:
        """The status and the headers (lower-case names) of the next response."""
        while b"\r\n\r\n" not in self.unread:
            self._receive()
        head, _, self.unread = self.unread.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def _read(self, length: int) -> bytes:
        while len(self.unread) < length:
            self._receive()
        data, self.unread = self.unread[:length], self.unread[length:]
        return data

    def _receive(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.unread += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def start_server(model: str, engine: str, workers: int | None
                 ) -> tuple[subprocess.Popen, str, str]:
    """`lenet5 serve MODEL --port 0` in a child process; returns it, its base URL and what it
    says it runs (engine, workers)."""
    env = child_env()
    workers_flag = [] if workers is None else ["--workers", str(workers)]
    process = subprocess.Popen([sys.executable, "-m", "lenet5", "serve", model, "--port", "0",
                                "--engine", engine, *workers_flag],
                               stderr=subprocess.PIPE, text=True, env=env)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stderr],
                     daemon=True).start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if process.poll() is not None:
                break
            continue
        if "serving" in line and " on http://" in line:
            return (process, line.split(" on ")[1].split()[0].rstrip("/"),
                    line.partition("(")[2].partition(")")[0])
        sys.stderr.write(line)
    process.kill()
    sys.exit("load_test: `lenet5 serve` did not start; see its messages above.")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time so far of a process and its descendants (the server's worker
    processes), from Linux /proc; NaN where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, TypeError):
        return float("nan")
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    return own + sum(cpu_seconds(int(child)) for child in children)


def tcp_inodes(port: int, state: str) -> set[str]:
    """Inodes of the TCP sockets on local `port` in `state` ("01" established, "0A" listening),
    from Linux /proc; empty where unknown."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for row in list(f)[1:]:  # sl local rem st ... inode
                fields = row.split()
                if fields[3] == state and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    return inodes


def connections_per_worker(pid: int | None, port: int) -> list[int]:
    """How many established connections to `port` each worker process (child of the server
    `pid`) holds, fewest first; [] where unknown (not Linux). Whether the kernel spread the
    clients over the workers, or one worker took them all."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except (OSError, TypeError):
        return []
    established = tcp_inodes(port, "01")
    counts = []
    for child in children:
        sockets = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{child}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{child}/fd/{fd}")
                    if link.startswith("socket:["):
                        sockets.add(link[8:-1])
        if sockets:  # a worker; multiprocessing's resource tracker holds none
            counts.append(len(sockets & established))
    return sorted(counts)


def wait_for_workers(pid: int | None, port: int, seconds: float = 120) -> int:
    """Wait until every worker process of the server `pid` listens on a socket of its own (it
    does once it has loaded the model; the first one up answers /healthz alone meanwhile), at
    most `seconds`; the number of workers listening. Connections made before would all stay
    on the first worker, which is not what a running server sees."""
    deadline = time.monotonic() + seconds
    while True:
        workers = len(connections_per_worker(pid, port))
        listening = len(tcp_inodes(port, "0A")) - 1  # the one all workers share
        if not workers or listening >= workers or time.monotonic() > deadline:
            return listening
        time.sleep(0.1)


def wait_healthy(host: str, port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=5)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            sys.exit(f"load_test: no healthy server at {host}:{port} after {seconds:.0f} s.")
        time.sleep(0.1)


def single_client(host: str, port: int, body: bytes, count: int, max_seconds: float) -> dict:
    client = Client(host, port, body)
    latencies, stages, errors = [], [], 0
    deadline = time.monotonic() + max_seconds
    while len(latencies) + errors < count and time.monotonic() < deadline:
        seconds, status, timing, _ = client.post()
        if status == 200:
            latencies.append(seconds)
            stages.append(timing)
        else:
            errors += 1
    return {"latencies": latencies, "stages": stages, "errors": errors}


def concurrent_clients(host: str, port: int, body: bytes, clients: int, count: int,
                       max_seconds: float) -> dict:
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    started = time.perf_counter()
    deadline = time.monotonic() + max_seconds

    def worker() -> None:
        client = Client(host, port, body)
        while time.monotonic() < deadline:
            with lock:
                if len(latencies) + len(failures) >= count:
                    return
            try:
                seconds, status, _, data = client.post()
                failure = None if status == 200 else f"HTTP {status}: {data[:120]!r}"
            except OSError as exc:
                seconds, failure = 0.0, f"{type(exc).__name__}: {exc}"
                client.close()  # the next post connects afresh
            with lock:
                if failure:
                    failures.append(failure)
                else:
                    latencies.append(seconds)

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "failures": failures,
            "seconds": time.perf_counter() - started}


def loaded_phase(host: str, port: int, pid: int | None, body: bytes, args: argparse.Namespace
                 ) -> tuple[dict, list[int], float]:
    """The concurrent phase (its "rate" in requests/s added), how many connections each
    worker held 2 s into it (once every client has connected), and the server's CPU ms per
    request in it."""
    spread: list[list[int]] = []
    sampler = threading.Timer(2.0, lambda: spread.append(connections_per_worker(pid, port)))
    sampler.start()
    cpu_before = cpu_seconds(pid)
    many = concurrent_clients(host, port, body, args.clients, args.concurrent_requests,
                              args.max_seconds)
    answered = max(1, len(many["latencies"]))
    cpu_ms = 1000 * (cpu_seconds(pid) - cpu_before) / answered
    sampler.cancel()
    many["rate"] = len(many["latencies"]) / many["seconds"]
    return many, spread[0] if spread else [], cpu_ms


def more_runs(args: argparse.Namespace, body: bytes) -> list[tuple[float, list[int], float]]:
    """(requests/s, connections per worker, server CPU ms per request) of the concurrent phase
    against args.runs - 1 more servers, each started afresh: which worker takes which
    connections is decided anew by every server."""
    results = []
    for _ in range(args.runs - 1):
        process, base, _ = start_server(args.model, args.engine, args.workers)
        host, port = urlsplit(base).hostname, urlsplit(base).port
        try:
            wait_healthy(host, port)
            wait_for_workers(process.pid, port)
            single_client(host, port, body, 30, args.max_seconds)  # warm up
            many, spread, cpu_ms = loaded_phase(host, port, process.pid, body, args)
        finally:
            process.terminate()
            process.wait(timeout=30)
        if many["failures"]:
            sys.exit(f"load_test: a run got {len(many['failures'])} errors, the first: "
                     f"{many['failures'][0]}")
        results.append((many["rate"], spread, cpu_ms))
    return results


def photo_agreement(host: str, port: int, model_path: str, engine: str, n: int) -> dict:
    """Held-out photographed digits (`tests/photo_digits.py`, from MNIST test digits) POSTed as
    raw JPEG bodies: the API's accuracy, and whether every answer equals `lenet5 predict`'s."""
    from lenet5.data import load as load_dataset
    from lenet5.model import load as load_model

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the generator
    from photo_digits import make_photo_set

    data = load_dataset("mnist")
    photos = make_photo_set(data.test_images, data.test_labels, n, seed=0)
    model = load_model(model_path, engine=engine)
    client = Client(host, port, b"")
    api_right = predict_right = same = 0
    for jpeg, label in photos:
        _, status, _, body = client.post(jpeg, "image/jpeg")
        api = json.loads(body)["label"] if status == 200 else -1
        local = model.read(jpeg)["label"]  # what `lenet5 predict` answers
        api_right += api == label
        predict_right += local == label
        same += api == local
    return {"n": n, "api": api_right / n, "predict": predict_right / n, "same": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", nargs="?", help="model.safetensors or run directory to serve")
    parser.add_argument("--url", help="test a server already running on loopback instead")
    parser.add_argument("--engine", default="numpy", help="engine of the server started here")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes of the server started here (default: "
                        "`lenet5 serve`'s own, one per core)")
    parser.add_argument("--height", type=int, default=160,
                        help="height of the drawing in px (the page sends 160)")
    parser.add_argument("--aspect", type=float, default=1.5,
                        help="its width / height (the page's pad: 1.5, room for a number)")
    parser.add_argument("--requests", type=int, default=500, help="single-client requests")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--concurrent-requests", type=int, default=4000,
                        help="requests in the concurrent phase, all clients together")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="time limit of each phase")
    parser.add_argument("--photos", type=int, default=0,
                        help="also POST this many held-out photographed digits and compare "
                        "with `lenet5 predict` (needs MODEL and MNIST; lenet5 importable)")
    parser.add_argument("--runs", type=int, default=1,
                        help="repeat the concurrent phase against this many servers, each "
                        "started afresh (needs MODEL)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown report to write")
    args = parser.parse_args()
    if args.aspect < 1 or args.height < 28:
        parser.error("--aspect must be at least 1 and --height at least 28 (the 7 fills the "
                     "pad's height)")
    if bool(args.model) == bool(args.url):
        parser.error("pass either MODEL (a server is started) or --url (one already running)")
    if args.runs > 1 and not args.model:
        parser.error("--runs needs MODEL, to start each server afresh")
    if args.photos and not args.model:
        parser.error("--photos needs MODEL, to compare with `lenet5 predict` on it")

    process, running = None, ""
    if args.url:
        base = args.url.rstrip("/")
    else:
        process, base, running = start_server(args.model, args.engine, args.workers)
    parts = urlsplit(base)
    if parts.scheme != "http" or parts.hostname not in LOOPBACK or not parts.port:
        parser.error(f"--url must be http://127.0.0.1:PORT (loopback only), got {base}")
    host, port = parts.hostname, parts.port
    body = canvas_png(args.height, args.aspect)
    load_before = os.getloadavg()
    try:
        wait_healthy(host, port)
        wait_for_workers(process.pid if process else None, port)
        warm = single_client(host, port, body, 30, args.max_seconds)
        answer = json.loads(Client(host, port, body).post()[3])
        pid = process.pid if process else None
        cpu = [cpu_seconds(pid)]
        single = single_client(host, port, body, args.requests, args.max_seconds)
        cpu.append(cpu_seconds(pid))
        client_cpu = time.process_time()
        many, spread, cpu_ms = loaded_phase(host, port, pid, body, args)
        client_cpu = time.process_time() - client_cpu
        photos = (photo_agreement(host, port, args.model, args.engine, args.photos)
                  if args.photos else None)
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=30)
    rps = many["rate"]
    runs = [(rps, spread, cpu_ms)] + more_runs(args, body)
    if warm["errors"] or not single["latencies"]:
        sys.exit("load_test: the server answered errors to a valid drawing.")

    ms = [1000 * s for s in single["latencies"]]
    p50, p95 = percentile(ms, 50), percentile(ms, 95)
    stage_ms = {name: statistics.median(t[name] for t in single["stages"])
                for name in single["stages"][0]}
    loaded_ms = [1000 * s for s in many["latencies"]] or [float("nan")]
    yes = {True: "yes", False: "**no**"}
    rows = [
        ("single client: requests", f"{len(ms)} ({single['errors']} errors)"),
        ("single client: p50 / p95 / p99 latency",
         f"{p50:.1f} / {p95:.1f} / {percentile(ms, 99):.1f} ms"),
        (f"single client: p95 <= {TARGET_P95_MS:.0f} ms", yes[p95 <= TARGET_P95_MS]),
        ("server time per request (median): " + ", ".join(stage_ms),
         " + ".join(f"{v:.2f}" for v in stage_ms.values()) + " ms"),
        ("rest of a request (HTTP, JSON, client, waiting for a core; p50 minus the stages)",
         f"{p50 - sum(stage_ms.values()):.1f} ms"),
        (f"server CPU per request (all its processes), single client / {args.clients} clients",
         f"{1000 * (cpu[1] - cpu[0]) / len(ms):.1f} / {cpu_ms:.1f} ms"),
        (f"load generator (this process) CPU per request, {args.clients} clients",
         f"{1000 * client_cpu / max(1, len(many['latencies'])):.1f} ms"),
        (f"{args.clients} clients: requests in {many['seconds']:.1f} s",
         f"{len(many['latencies'])} ({len(many['failures'])} errors)"),
        (f"{args.clients} clients: throughput", f"{rps:.0f} requests/s"),
        (f"{args.clients} clients: connections held by each worker process (2 s in)",
         " / ".join(map(str, spread)) or "not known"),
        (f"{args.clients} clients: p50 / p95 latency",
         f"{percentile(loaded_ms, 50):.1f} / {percentile(loaded_ms, 95):.1f} ms"),
        (f"{args.clients} clients: >= {TARGET_RPS:.0f} requests/s, no errors",
         yes[rps >= TARGET_RPS and not many["failures"]]),
        *([(f"{args.clients} clients, each of {len(runs)} runs (a server started afresh "
            "for each): throughput, connections per worker, server CPU per request",
            "; ".join(f"{r:.0f} req/s ({' / '.join(map(str, c)) or '?'}, {ms:.1f} ms)"
                      for r, c, ms in runs)
            + f"; lowest {min(r for r, _, _ in runs):.0f} req/s"),
           (f"{args.clients} clients: >= {TARGET_RPS:.0f} requests/s in every run",
            yes[min(r for r, _, _ in runs) >= TARGET_RPS])] if len(runs) > 1 else []),
        ("request", f"{round(args.aspect * args.height)}x{args.height} grey PNG ({len(body)} "
                    f"bytes) of a 7, as the page sends a drawing; answered "
                    f"{answer['label']} ({100 * answer['confidence']:.1f}%), "
                    f"{len(json.dumps(answer))} bytes of JSON"),
        ("server", f"started here: `lenet5 serve MODEL --port 0 --engine {args.engine}"
                   + ("" if args.workers is None else f" --workers {args.workers}")
                   + f"` ({running})" if process else f"already running at {base}"),
        ("machine", f"{machine()}; load average {load_before[0]:.1f} before / "
                    f"{os.getloadavg()[0]:.1f} after; clients and server share the cores"),
    ]
    if photos:
        rows.insert(-3, ("held-out photographed digits POSTed as JPEG: API accuracy",
                         f"{100 * photos['api']:.2f}% of {photos['n']} (`lenet5 predict`: "
                         f"{100 * photos['predict']:.2f}%; same label for {photos['same']} of "
                         f"{photos['n']})"))
    lines = ["| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
    if load_before[0] > (os.cpu_count() or 1):
        lines += ["", f"The machine was busy with other jobs (load average {load_before[0]:.1f} "
                  f"on {os.cpu_count()} cores): times are upper bounds, and the server's CPU "
                  "time per request is the steadier measure."]
    if many["failures"]:
        lines += ["", "First errors:", *[f"- {f}" for f in many["failures"][:5]]]
    text = "\n".join(lines) + "\n"
    write_results(args.out, text)


if __name__ == "__main__":
    main()
