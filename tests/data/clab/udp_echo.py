"""A UDP echo server on every address: sends each datagram back to its sender."""

import argparse
import socket

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
port = parser.parse_args().port
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.bind(("0.0.0.0", port))
    print(f"echo on udp/{port}", flush=True)
    while True:
        data, sender = sock.recvfrom(65535)
        sock.sendto(data, sender)
