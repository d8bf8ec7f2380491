"""Cross-field rules of the config that a per-field schema cannot express.

``check_rules(config)`` returns every violated rule as ``(location, message)``;
it is pure and never raises for a structurally valid config.
"""

from __future__ import annotations

from collections import Counter

from dyncast_bgp.config.schema import Config


def check_rules(config: Config) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    problems += _unique_services(config)
    for index, service in enumerate(config.services):
        where = f"services[{index}]"
        problems += _service_rules(config, index)
        names = Counter(instance.name for instance in service.instances)
        bindings = Counter(str(instance.binding) for instance in service.instances)
        ids = Counter(instance.path_id for instance in service.instances if instance.path_id is not None)
        for position, instance in enumerate(service.instances):
            at = f"{where}.instances[{position}]"
            if names[instance.name] > 1:
                problems.append((f"{at}.name", f"duplicate instance name {instance.name!r} in {service.name}"))
            if bindings[str(instance.binding)] > 1:
                problems.append((f"{at}.binding", f"duplicate D-BID {instance.binding} in {service.name}"))
            if instance.path_id is not None and ids[instance.path_id] > 1:
                problems.append((f"{at}.path_id", f"duplicate path_id {instance.path_id} in {service.name}"))
    if config.bgp.link_bandwidth and config.bgp.link_bandwidth_as is None and config.bgp.local_as > 0xFFFF:
        problems.append(("bgp.link_bandwidth_as",
                         "required when local_as does not fit 2 octets (the community carries a 2-octet AS)"))
    return problems


def _unique_services(config: Config) -> list[tuple[str, str]]:
    problems = []
    names = Counter(service.name for service in config.services)
    prefixes = Counter(str(service.service_id) for service in config.services)
    for index, service in enumerate(config.services):
        if names[service.name] > 1:
            problems.append((f"services[{index}].name", f"duplicate service name {service.name!r}"))
        if prefixes[str(service.service_id)] > 1:
            problems.append((f"services[{index}].dsid", f"duplicate D-SID {service.service_id}"))
    return problems


def _service_rules(config: Config, index: int) -> list[tuple[str, str]]:
    service = config.services[index]
    where = f"services[{index}]"
    publish = config.publish_for(service)
    problems = []
    version = service.service_id.version
    if publish.mode == "per-instance" and len(service.instances) > 1 and not config.bgp.add_path:
        problems.append((f"{where}.instances",
                         f"{len(service.instances)} instances of one D-SID in per-instance mode need "
                         "bgp.add_path: true (without ADD-PATH each announcement replaces the last); "
                         "or use publish.mode: per-site"))
    for position, instance in enumerate(service.instances):
        if instance.binding.version != version:
            problems.append((f"{where}.instances[{position}].binding",
                             f"IPv{instance.binding.version} D-BID for an IPv{version} D-SID; "
                             "the next hop must be of the service's family"))
    return problems
