"""Where webhooks may go: the operator's WEBHOOK_ALLOWED_HOSTS (host names, IPs and CIDRs).

A host name listed is allowed whatever it resolves to; any other host is allowed when every address it
resolves to lies in a listed IP or CIDR. Checked at registration and again before each attempt, so a
name that now resolves elsewhere, or an allow-list changed since, stops deliveries.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

Resolver = Callable[[str], list[str]]


def resolve(host: str) -> list[str]:
    """Every address the host name resolves to (an IP literal: itself)."""
    found = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]).split("%", 1)[0] for info in found})  # an IPv6 zone is no address


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook's address at all; None when it can."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port that is no number)
    except ValueError as exc:
        return f"the URL cannot be read: {exc}"
    if parts.scheme not in ("http", "https"):
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL names no host"
    if parts.username or parts.password:
        return "the URL may not carry a user name or password"
    return None


def host_refusal(url: str, allowed: tuple[str, ...], resolver: Resolver = resolve) -> str | None:
    """Why the operator does not allow sending to `url` now; None when it is allowed."""
    if not allowed:
        return "the operator allows no webhook hosts (GPTOSS_WEBHOOK_ALLOWED_HOSTS is empty)"
    host = (urlsplit(url).hostname or "").lower()
    if host in allowed:
        return None
    networks = [ipaddress.ip_network(entry, strict=False) for entry in allowed if is_address(entry)]
    try:
        addresses = resolver(host)
    except OSError as exc:
        return f"the host {host} cannot be resolved: {exc}"
    outside = [a for a in addresses if not any(ipaddress.ip_address(a) in net for net in networks)]
    if outside or not addresses:
        shown = ", ".join(outside) or "no address"
        return f"the host {host} ({shown}) is not in the operator's allowed hosts"
    return None


def is_address(entry: str) -> bool:
    """Whether an allow-list entry is an IP address or a CIDR (else it is a host name)."""
    try:
        ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False
    return True
