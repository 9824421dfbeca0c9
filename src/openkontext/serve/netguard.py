"""Outbound HTTP under an address policy: fetching input images and posting webhooks.

Only public addresses are reached. A URL is refused when its host resolves to any address that
is not globally routable: loopback, unspecified, private, link-local, site-local, multicast,
broadcast, reserved, shared (carrier-grade NAT, 100.64.0.0/10), documentation, benchmarking and
the other special-purpose blocks. An IPv6 address that carries an IPv4 address (IPv4-mapped,
IPv4-compatible, 6to4, Teredo, NAT64 64:ff9b::/96) is judged by the IPv4 address(es) it
carries; local-use NAT64 (64:ff9b:1::/48) is refused outright. An operator lets a refused
address through by putting the host name, or a network holding the address (or the IPv4 address
it carries), on `fetch_allow_hosts`.

The URL is parsed once, by httpx, and the host httpx will connect to (an IDN name as IDNA
encodes it) is the one checked; a URL httpx cannot parse, with spaces or control characters, or
with a port outside 1-65535 is refused with what is wrong. Redirects are followed by
hand (at most 3), each hop checked again. The check resolves the name just before connecting;
a DNS server that answers differently a moment later (rebinding) is not defended against.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import time

import httpx

MAX_REDIRECTS = 3
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# What a host can be once httpx has parsed it: an ASCII name (IDNA already applied) or an IPv6
# literal. Anything else (percent signs, a zone id) would reach the resolver unchecked.
_HOST = re.compile(r"[a-z0-9_.:-]+", re.IGNORECASE)
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
# Not globally routable, yet counted as global by the `ipaddress` of some Python versions.
_SPECIAL = {
    ipaddress.IPv6Network("64:ff9b:1::/48"): "a local-use NAT64 address",
    ipaddress.IPv6Network("3fff::/20"): "a documentation address",
}


class Refused(ValueError):
    """A URL the policy does not allow, or a fetch that failed; the message says which."""


def _carried(addr: Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address stands for, each with the name of the form."""
    if isinstance(addr, ipaddress.IPv4Address) or addr.is_loopback or addr.is_unspecified:
        return []
    if addr.ipv4_mapped is not None:
        return [("IPv4-mapped", addr.ipv4_mapped)]
    if addr.sixtofour is not None:
        return [("6to4", addr.sixtofour)]
    if addr.teredo is not None:
        server, client = addr.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    if addr in _NAT64 or addr in _COMPATIBLE:
        form = "NAT64" if addr in _NAT64 else "IPv4-compatible"
        return [(form, ipaddress.IPv4Address(int(addr) & 0xFFFF_FFFF))]
    return []


def _kind(addr: Address) -> str | None:
    """What makes `addr` non-public, in words; None for a globally routable address."""
    carried = _carried(addr)
    if carried:
        for form, inner in carried:
            why = _kind(inner)
            if why is not None:
                return f"{form} for {inner}, {why}"
        return None
    if addr.is_unspecified:
        return "the unspecified address"
    if addr.is_loopback:
        return "a loopback address"
    if addr.is_link_local:
        return "a link-local address"
    if addr.is_multicast:
        return "a multicast address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return "a site-local address"
    if addr in _SHARED:
        return "a shared (carrier-grade NAT) address"
    for network, why in _SPECIAL.items():
        if addr in network:
            return why
    if addr.is_private or addr.is_reserved:
        return "a private, reserved or special-purpose address"
    if not addr.is_global:
        return "not a globally routable address"
    return None


def _allowed(name: str, addr: Address, allow: list[str]) -> bool:
    """Whether `fetch_allow_hosts` lets `name`, resolved to `addr`, through: the name is on
    the list, or a network on it holds the address or an IPv4 address it carries."""
    networks = []
    for entry in allow:
        if entry.lower().rstrip(".") == name:
            return True
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    candidates = [addr, *(inner for _, inner in _carried(addr))]
    return any(a in n for a in candidates for n in networks)


def _parse(url: str) -> tuple[httpx.URL, str, int]:
    """-> (the URL as httpx will request it, its host, its port); Refused when it is not an
    http(s) URL with a host that httpx can parse."""
    bad = next((i for i, c in enumerate(url) if c.isspace() or not c.isprintable()), None)
    if bad is not None:
        raise Refused(
            f"the URL has a space or control character ({url[bad]!r} at position {bad}); "
            "percent-encode it"
        )
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL as e:
        raise Refused(f"not a valid URL: {e}") from None
    if target.scheme not in ("http", "https"):
        raise Refused(f"only http and https URLs are accepted, got {target.scheme or 'none'!r}")
    host = target.raw_host.decode("ascii")
    if not host:
        raise Refused("the URL has no host")
    if not _HOST.fullmatch(host):
        raise Refused(f"the URL's host {host!r} is not a host name or an IP address")
    port = target.port if target.port is not None else 443 if target.scheme == "https" else 80
    if not 0 < port < 65536:
        raise Refused(f"the URL's port {port} is out of range (1 to 65535)")
    return target, host, port


def _naming(host: str, addr: Address) -> str:
    """The start of a refusal: "127.0.0.1 is" for a literal host, else "'name' resolves to"."""
    try:
        literal = ipaddress.ip_address(host) == addr
    except ValueError:
        literal = False
    return f"{host} is" if literal else f"{host!r} resolves to {addr},"


def check_url(url: str, allow: list[str]) -> httpx.URL:
    """-> `url` parsed, as fetch and post request it. Raises Refused unless it is an http(s)
    URL whose host resolves only to public or allowed addresses."""
    target, host, port = _parse(url)
    name = host.lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addrs = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    except (OSError, UnicodeError, ValueError) as e:
        raise Refused(f"cannot resolve {host!r}: {e}") from None
    for addr in addrs:
        why = _kind(addr)
        if why is not None and not _allowed(name, addr, allow):
            raise Refused(
                f"{_naming(host, addr)} {why}; only public addresses are allowed. Add the host, "
                "or a network holding the address, to fetch_allow_hosts to allow it"
            )
    return target


def fetch(url: str, allow: list[str], max_bytes: int, timeout: float) -> bytes:
    """GET `url` under the policy: at most `max_bytes`, all within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target = check_url(url, allow)
            left = deadline - time.monotonic()
            try:
                with client.stream("GET", target, timeout=max(left, 0.01)) as r:
                    if r.next_request is not None:  # a redirect, its Location parsed by httpx
                        url = str(r.next_request.url)
                        continue
                    if r.status_code != 200:
                        raise Refused(f"fetching the URL gave HTTP {r.status_code}")
                    size = int(r.headers.get("content-length") or 0)
                    if size > max_bytes:
                        raise Refused(
                            f"the URL's content is {size:,} bytes, over the "
                            f"{max_bytes:,} byte limit"
                        )
                    data = bytearray()
                    for chunk in r.iter_bytes():
                        data += chunk
                        if len(data) > max_bytes:
                            raise Refused(f"the URL's content is over the {max_bytes:,} byte limit")
                        if time.monotonic() > deadline:
                            raise Refused(f"fetching the URL took over {timeout:g} s")
                    return bytes(data)
            except httpx.TimeoutException:
                raise Refused(f"fetching the URL took over {timeout:g} s") from None
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                raise Refused(f"fetching the URL failed: {e}") from None
    raise Refused(f"more than {MAX_REDIRECTS} redirects")


def post(url: str, allow: list[str], body: bytes, headers: dict[str, str], timeout: float) -> int:
    """POST under the policy, no redirects followed; -> the HTTP status. Raises Refused or
    httpx.HTTPError."""
    target = check_url(url, allow)
    with httpx.Client(follow_redirects=False, trust_env=False, timeout=timeout) as client:
        try:
            return client.post(target, content=body, headers=headers).status_code
        except httpx.InvalidURL as e:
            raise Refused(f"not a valid URL: {e}") from None
