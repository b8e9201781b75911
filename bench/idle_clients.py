"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on
each and reads its answer, prints "ready", then holds them idle until its
standard input closes. With --again, it then sends one more request on each
and checks the answers first (every connection still served).

Usage: python3 bench/idle_clients.py PORT N PATH [--again]
"""
import resource
import socket
import sys

port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
again = "--again" in sys.argv[4:]
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def ask(sock):
    """Sends the request and reads its whole answer (a Content-Length body)."""
    sock.sendall(request)
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(65536) or sys.exit("closed before an answer")
    head, body = answer.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {head[:80]!r}")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536) or sys.exit("closed before the body")


socks = []
for _ in range(count):
    s = socket.create_connection(("127.0.0.1", port))
    ask(s)
    socks.append(s)
print("ready", flush=True)
sys.stdin.read()
if again:
    for s in socks:
        ask(s)
    print(f"served again: {len(socks)}", flush=True)
