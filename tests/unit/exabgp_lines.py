"""Build ExaBGP 5.0 JSON lines (the shape of tests/golden/exabgp_json) for router tests."""

from __future__ import annotations

import json

from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.metrics import encode_metrics


def update(time: float, peer: str, prefix: str, next_hop: str, path_id: int, *, metrics: dict[str, float],
           flags: int = 0) -> str:
    values = [int.from_bytes(c.pack(), "big") for c in encode_metrics(metrics, flags=StateFlag(flags))]
    family = "ipv6 unicast" if ":" in prefix else "ipv4 unicast"
    return json.dumps({
        "exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 1, "type": "update",
        "neighbor": {"address": {"local": "10.0.0.2", "peer": peer}, "asn": {"local": 65000, "peer": 65000},
                     "direction": "receive",
                     "message": {"update": {
                         "attribute": {"origin": "igp", "local-preference": 100,
                                       "extended-community": [{"value": v, "string": ""} for v in values]},
                         "announce": {family: {next_hop: [{"nlri": prefix,
                                                           "path-information": f"0.0.0.{path_id}"}]}}}}}})


def withdraw(time: float, peer: str, prefix: str, path_id: int) -> str:
    family = "ipv6 unicast" if ":" in prefix else "ipv4 unicast"
    return json.dumps({
        "exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 2, "type": "update",
        "neighbor": {"address": {"local": "10.0.0.2", "peer": peer}, "asn": {"local": 65000, "peer": 65000},
                     "direction": "receive",
                     "message": {"update": {"withdraw": {family: [{"nlri": prefix,
                                                                   "path-information": f"0.0.0.{path_id}"}]}}}}})


def peer_down(time: float, peer: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 3,
                       "type": "state", "neighbor": {"address": {"local": "10.0.0.2", "peer": peer},
                                                     "asn": {"local": 65000, "peer": 65000},
                                                     "state": "down", "reason": "hold timer expired"}})


def peer_up(time: float, peer: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 4,
                       "type": "state", "neighbor": {"address": {"local": "10.0.0.2", "peer": peer},
                                                     "asn": {"local": 65000, "peer": 65000}, "state": "up"}})


def end_of_rib(time: float, peer: str) -> str:
    return json.dumps({"exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 5,
                       "type": "update", "neighbor": {"address": {"local": "10.0.0.2", "peer": peer},
                                                      "asn": {"local": 65000, "peer": 65000},
                                                      "direction": "receive",
                                                      "message": {"eor": {"afi": "ipv4", "safi": "unicast"}}}})
