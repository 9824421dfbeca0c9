"""Outbound HTTP under an address policy: fetching input images and posting webhooks.

A URL is refused when its host resolves to a loopback, private, link-local, multicast, reserved
or unspecified address (IPv4-mapped IPv6 included), unless the host name, or a network
containing every address it resolves to, is on `fetch_allow_hosts`. Redirects are followed by
hand (at most 3), each hop checked again. The check resolves the name just before connecting;
a DNS server that answers differently a moment later (rebinding) is not defended against.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urljoin, urlsplit

import httpx

MAX_REDIRECTS = 3
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(ValueError):
    """A URL the policy does not allow, or a fetch that failed; the message says which."""


def _internal(addr: Address) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return (
        addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_multicast
        or addr.is_reserved or addr.is_unspecified
    )


def _allowed(host: str, addrs: list[Address], allow: list[str]) -> bool:
    if host in allow:
        return True
    networks = []
    for entry in allow:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return all(any(a in n for n in networks) for a in addrs)


def check_url(url: str, allow: list[str]) -> None:
    """Raise Refused unless `url` is http(s) and its host resolves to allowed addresses."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are accepted, got {parts.scheme or 'none'!r}")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise Refused("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as e:
        raise Refused(f"cannot resolve {host!r}: {e}") from None
    addrs = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    internal = [a for a in addrs if _internal(a)]
    if internal and not _allowed(host, addrs, allow):
        raise Refused(
            f"{host!r} resolves to {internal[0]}, a loopback, private or link-local address; "
            "add the host to fetch_allow_hosts to allow it"
        )


def fetch(url: str, allow: list[str], max_bytes: int, timeout: float) -> bytes:
    """GET `url` under the policy: at most `max_bytes`, all within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, allow)
            left = deadline - time.monotonic()
            try:
                with client.stream("GET", url, timeout=max(left, 0.01)) as r:
                    if r.is_redirect and "location" in r.headers:
                        url = urljoin(url, r.headers["location"])
                        continue
                    if r.status_code != 200:
                        raise Refused(f"fetching the URL gave HTTP {r.status_code}")
                    size = int(r.headers.get("content-length") or 0)
                    if size > max_bytes:
                        raise Refused(f"the URL's content is {size:,} bytes, over the "
                                      f"{max_bytes:,} byte limit")
                    data = bytearray()
                    for chunk in r.iter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            raise Refused(f"the URL's content is over the {max_bytes:,} byte "
                                          "limit")
                        if time.monotonic() > deadline:
                            raise Refused(f"fetching the URL took over {timeout:g} s")
                    return bytes(data)
            except httpx.TimeoutException:
                raise Refused(f"fetching the URL took over {timeout:g} s") from None
            except httpx.HTTPError as e:
                raise Refused(f"fetching the URL failed: {e}") from None
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def post(url: str, allow: list[str], body: bytes, headers: dict[str, str],
         timeout: float) -> int:
    """POST under the policy, no redirects followed; -> the HTTP status. Raises Refused or
    httpx.HTTPError."""
    check_url(url, allow)
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
        return client.post(url, content=body, headers=headers).status_code
