"""The dev server's self-signed certificate, kept valid for the addresses being served.

``serve`` without ``--cert``/``--key`` serves TLS with a pair in ``.certs/``. A
phone checks that the certificate names the address it opened, so the pair is
made again whenever it does not cover every address being served (the LAN
address changed, ``--host`` names another one), when it expires within a week,
or when it does not parse. A ``--cert``/``--key`` pair given on the command line
is never read here, let alone rewritten.

Example::

    cert, key = self_signed_cert(Path(".certs"), ["192.168.1.20"])
    assert cert_covers(cert, ["localhost", "127.0.0.1", "192.168.1.20"])
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import subprocess
from pathlib import Path

__all__ = ["lan_addresses", "cert_names", "cert_covers", "san_name", "self_signed_cert"]

log = logging.getLogger("pyapp.server")

_RENEW_BEFORE = datetime.timedelta(days=7)


def lan_addresses() -> list[str]:
    """This machine's non-loopback IPv4 addresses (for the URLs to print and the certificate)."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    addrs = []
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            addr = parts[parts.index("inet") + 1].split("/")[0]
            if not ipaddress.ip_address(addr).is_loopback:
                addrs.append(addr)
    return addrs


def _wanted(hosts: list[str]) -> list[str]:
    """The names a certificate for ``hosts`` must hold (wildcard binds name no address)."""
    names = ["localhost", "127.0.0.1"]
    for host in hosts:
        if host in ("", "0.0.0.0", "::") or host in names:
            continue
        names.append(host)
    return names


def cert_names(cert_path: Path) -> tuple[set[str], datetime.datetime] | None:
    """(DNS names and IP addresses in the SAN, not-after) of a PEM certificate; None if unreadable."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return None
    names = set(san.get_values_for_type(x509.DNSName))
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return names, cert.not_valid_after_utc


def san_name(host: str) -> str | None:
    """How ``host`` appears in a certificate: an IP address, or a DNS name as its ASCII A-label.

    A name with non-ASCII letters is IDNA-encoded (``bücher.example`` becomes
    ``xn--bcher-kva.example``, the form a browser checks). None for a name no
    certificate can hold (an empty label, a label over 63 characters ...).
    """
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    from cryptography import x509

    try:
        x509.DNSName(name)
    except ValueError:
        return None
    return name or None


def cert_covers(cert_path: Path, hosts: list[str],
                now: datetime.datetime | None = None) -> bool:
    """Whether the certificate names every host (as DNS name or IP) and is valid for a week more.

    A host no certificate can name (see :func:`san_name`) is left out of the check:
    no certificate could cover it, so it must not force a new one at every start.
    """
    info = cert_names(cert_path)
    if info is None:
        return False
    names, not_after = info
    now = now or datetime.datetime.now(datetime.UTC)
    if not_after - now < _RENEW_BEFORE:
        return False
    for host in hosts:
        name = san_name(host)
        if name is not None and name not in names:
            return False
    return True


def self_signed_cert(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The pair in ``directory`` for localhost and ``hosts``; made again if it does not cover them."""
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    wanted = []
    for host in _wanted(hosts):
        if san_name(host) is None:
            log.warning("host name %r cannot be put in a certificate (not a valid DNS name or "
                        "IP address): the self-signed certificate leaves it out, so a browser "
                        "opening it will warn; serve a valid name or address", host)
        else:
            wanted.append(host)
    if cert_path.exists() and key_path.exists() and cert_covers(cert_path, wanted):
        return cert_path, key_path
    if cert_path.exists():
        log.info("self-signed certificate in %s does not cover %s: making a new one",
                 directory, ", ".join(wanted))

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = []
    for host in wanted:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(san_name(host) or host))  # san_name accepted it above
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pyapp dev server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    # Key first, then the certificate: a reader that finds a new cert finds its key.
    tmp_key, tmp_cert = key_path.with_suffix(".tmp"), cert_path.with_suffix(".tmp")
    # The key file is private from its creation (not after a chmod): 0600 whatever the umask.
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(tmp_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(out.fileno(), 0o600)  # a tmp file left by a crash keeps its old mode otherwise
        out.write(pem)
    tmp_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tmp_key.replace(key_path)
    tmp_cert.replace(cert_path)
    return cert_path, key_path
