"""Opens many connections to a TLS server at once and reports the server's peak RSS.

conn-flood.py PID CA N MODE [SECONDS]
  MODE idle: N TLS connections that complete their handshake and send nothing;
  MODE kept: N HTTP/1.1 connections, each sending one GET of $FLOOD_PATH, reading its answer, and
             then holding the connection open as a client's idle pool does;
  MODE body: N HTTP/1.1 connections, each POSTing a body (spaces; 3 MiB, the largest admission
             review) and sending it as fast as the server reads it;
  MODE h2:   N HTTP/2 connections, each opening 200 such requests and sending as much of their
             bodies as flow control lets it.
The server listens on localhost:$FLOOD_PORT (18443) and its process is PID; requests go to
$FLOOD_PATH (/mutate) with bodies of $FLOOD_BODY bytes. Prints one line: connections opened,
refused, and the peak RSS sampled every 250 ms over SECONDS (default 8); then how long one more
connection took to complete its TLS handshake while the flood still holds its connections (with
N at the server's --max-connections, how long a newcomer waits for a slot).
"""
import asyncio
import os
import ssl
import sys
import time

import h2.config
import h2.connection

PID, CA, N, MODE = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
SECONDS = float(sys.argv[5]) if len(sys.argv) > 5 else 8.0
PORT = int(os.environ.get("FLOOD_PORT", "18443"))
PATH = os.environ.get("FLOOD_PATH", "/mutate")
BODY = int(os.environ.get("FLOOD_BODY", str(3 * 1024 * 1024)))
STREAMS = 200


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit(f"no VmRSS for {PID}")


stats = {"opened": 0, "refused": 0}


async def connect(alpn):
    ctx = ssl.create_default_context(cafile=CA)
    ctx.set_alpn_protocols([alpn])
    try:
        conn = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", PORT, ssl=ctx, server_hostname="localhost"), 30)
    except (OSError, asyncio.TimeoutError, ssl.SSLError):
        stats["refused"] += 1
        return None
    stats["opened"] += 1
    return conn


async def http1(sends):
    """One HTTP/1.1 connection that sends nothing, one GET, or one POST of a body."""
    conn = await connect("http/1.1")
    if conn is None or sends == "nothing":
        return conn
    r, w = conn
    if sends == "get":
        w.write(f"GET {PATH} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        await w.drain()
        if not await r.read(65536):
            stats["refused"] += 1
        return conn
    w.write(f"POST {PATH} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {BODY}\r\n\r\n".encode())
    left = BODY
    while left > 0:
        if w.is_closing():  # answered or closed by the server: writing on would only warn
            return conn
        w.write(b" " * min(left, 65536))
        left -= min(left, 65536)
        await w.drain()
    return conn


async def http2():
    conn = await connect("h2")
    if conn is None:
        return None
    r, w = conn
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    left = {}
    for _ in range(STREAMS):
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":path", PATH), (":scheme", "https"),
                             (":authority", "localhost"), ("content-type", "application/json"),
                             ("content-length", str(BODY))])
        left[sid] = BODY
    while True:
        for sid in list(left):
            n = min(c.local_flow_control_window(sid), c.max_outbound_frame_size, left[sid])
            while n > 0:
                try:
                    c.send_data(sid, b" " * n)
                except Exception:  # the server refused or reset the stream
                    left.pop(sid)
                    break
                left[sid] -= n
                n = min(c.local_flow_control_window(sid), c.max_outbound_frame_size, left[sid])
        w.write(c.data_to_send())
        await w.drain()
        data = await r.read(65536)
        if not data:
            return conn
        c.receive_data(data)


async def main():
    one = {"idle": lambda: http1("nothing"), "kept": lambda: http1("get"),
           "body": lambda: http1("body"), "h2": http2}[MODE]

    async def held():
        try:
            conn = await one()
            await asyncio.sleep(SECONDS + 60)
            return conn
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            return None

    before = rss_kib()
    tasks = [asyncio.create_task(held()) for _ in range(N)]
    started, peak = time.monotonic(), before
    while time.monotonic() - started < SECONDS:
        await asyncio.sleep(0.25)
        peak = max(peak, rss_kib())
    opened, refused = stats["opened"], stats["refused"]
    newcomer = time.monotonic()
    conn = await connect("http/1.1")
    waited = time.monotonic() - newcomer
    if conn is not None:
        conn[1].close()
    came = "was turned away" if conn is None else "got in"
    print(f"{N} {MODE}: {opened} opened, {refused} refused; "
          f"RSS {before} KiB before, {peak} KiB at peak; one more {came} after {waited:.2f} s")
    for t in tasks:
        t.cancel()


asyncio.run(main())
