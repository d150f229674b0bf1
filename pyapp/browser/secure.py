"""End-to-end encrypted channels: AES-256-GCM envelopes over any message channel.

:class:`EncryptedChannel` wraps any object with ``async send(bytes)``,
``async receive() -> bytes`` and a ``channel_id`` (a
:class:`~pyapp.browser.mux.MultiplexedChannel`; a raw
:class:`~pyapp.browser.datachannel.DataChannel` works too -- its SCTP stream
id is used). Each message becomes one envelope of the core's format
(:mod:`pyapp.core.security.envelope`: 17-byte header, ciphertext, 16-byte
tag), sealed with WebCrypto.

Two ways to key it:

* **Mode 1, session keys** (:meth:`EncryptedChannel.from_session`): the
  per-direction secrets from :func:`pyapp.browser.auth.authenticate` (ECDH
  X25519 / P-256 + HKDF over the signed transcript).
* **Mode 2, pre-shared key** (:meth:`EncryptedChannel.from_psk`): both
  sides hold the same secret (>= 16 bytes); HKDF separates the directions, so
  the two peers must take different roles (:func:`role_of` does it for a
  connection).

:meth:`EncryptedChannel.receive` raises
:class:`~pyapp.exceptions.DecryptionError` (``reason``: ``"authentication
failed"``, ``"replay"``, ``"unknown key id"``, ``"malformed envelope"``) for a
message that does not open; the message is dropped -- tampered plaintext is
never delivered -- counted in ``rejected``, and the next ``receive`` goes on
with the following message. Rekeying follows the :class:`RekeyPolicy`
(messages / seconds), or :meth:`EncryptedChannel.rekey` on demand.

Sends are pipelined: ``send`` assigns the envelope's counter at once (in call
order) and starts the WebCrypto encryption; up to ``window`` encryptions run
concurrently and their results go out strictly in counter order. ``await
send()`` returns once the message is handed to the transport, so awaiting
each send keeps the simple semantics; :meth:`EncryptedChannel.submit`
plus :meth:`EncryptedChannel.flush` give the pipelined speed.

The seed's functions :func:`send_encrypted` / :func:`receive_encrypted` keep
one EncryptedChannel per transport object.

Example (in the page)::

    result = await pc.authenticate(me)
    chan = EncryptedChannel.from_session(pc.create_multiplexed_channel(5), result)
    await chan.send(b"buy 10 @ 42")
    reply = await chan.receive()            # DecryptionError if tampered

    # Mode 2 (a key agreed out of band):
    await send_encrypted(mux_channel, b"hello", key=psk)
    text = await receive_encrypted(mux_channel, key=psk)
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any, Protocol

from pyapp.browser.auth import AuthResult, role_of, session_of
from pyapp.browser.crypto import default_crypto
from pyapp.core.security.envelope import (
    MALFORMED,
    EnvelopeHeader,
    RekeyPolicy,
    SecureChannel,
    seal_envelope,
)
from pyapp.core.security.interface import Crypto
from pyapp.core.security.keys import Role, derive_psk_secrets
from pyapp.exceptions import DecryptionError, LocalProtocolError

__all__ = [
    "EncryptedChannel",
    "MessageChannel",
    "RekeyPolicy",
    "receive_encrypted",
    "send_encrypted",
]

DEFAULT_WINDOW = 8


class MessageChannel(Protocol):
    """What :class:`EncryptedChannel` needs from the channel underneath."""

    async def send(self, data: bytes) -> None: ...

    async def receive(self) -> bytes | str: ...


def _channel_id(transport: Any) -> int:
    value = getattr(transport, "channel_id", None)
    if value is None:
        value = getattr(transport, "id", None)  # a raw DataChannel: its SCTP stream id
    if not isinstance(value, int):
        raise LocalProtocolError("pass channel_id=: the transport has no channel_id (or id) yet")
    return value


def _reliable(transport: Any) -> bool:
    if hasattr(transport, "max_retransmits") and hasattr(transport, "ordered"):
        return bool(transport.ordered) and transport.max_retransmits is None and (
            getattr(transport, "max_packet_life_time", None) is None)
    reliability = getattr(transport, "reliability", None)
    if reliability is not None:
        return bool(getattr(reliability, "reliable", True)) and bool(
            getattr(reliability, "ordered", True))
    return True


class EncryptedChannel:
    """AES-256-GCM envelopes over a message channel (see the module docstring)."""

    def __init__(self, transport: Any, secure: SecureChannel, *, window: int = DEFAULT_WINDOW,
                 crypto: Crypto | None = None) -> None:
        if window < 1:
            raise LocalProtocolError("window must be >= 1")
        self.transport = transport
        self.secure = secure
        self.window = window
        self._crypto: Crypto = crypto or default_crypto()
        # Sealing pipeline: (header, encryption task) in counter order.
        self._pending: deque[asyncio.Future[bytes]] = deque()
        self._send_lock = asyncio.Lock()
        self._epoch_lock = asyncio.Lock()
        self._send_error: BaseException | None = None
        self.sent = 0
        """Envelopes handed to the transport."""
        self.received = 0
        """Messages opened and delivered."""

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_session(cls, transport: Any, session: AuthResult, *, channel_id: int | None = None,
                     reliable: bool | None = None, policy: RekeyPolicy | None = None,
                     window: int = DEFAULT_WINDOW, crypto: Crypto | None = None) -> EncryptedChannel:
        """Mode 1: keys from :func:`~pyapp.browser.auth.authenticate`'s result."""
        crypto = crypto or default_crypto()
        cid = _channel_id(transport) if channel_id is None else channel_id
        rel = _reliable(transport) if reliable is None else reliable
        secure = SecureChannel.from_keys(crypto, session.keys, session.role, cid,
                                         reliable=rel, policy=policy)
        return cls(transport, secure, window=window, crypto=crypto)

    @classmethod
    async def from_psk(cls, transport: Any, psk: bytes, role: Role, *,
                       channel_id: int | None = None, reliable: bool | None = None,
                       policy: RekeyPolicy | None = None, window: int = DEFAULT_WINDOW,
                       crypto: Crypto | None = None) -> EncryptedChannel:
        """Mode 2: a pre-shared key; the two peers must pass different ``role`` values."""
        crypto = crypto or default_crypto()
        cid = _channel_id(transport) if channel_id is None else channel_id
        rel = _reliable(transport) if reliable is None else reliable
        keys = await derive_psk_secrets(crypto, psk)
        secure = SecureChannel.from_keys(crypto, keys, role, cid, reliable=rel, policy=policy)
        return cls(transport, secure, window=window, crypto=crypto)

    # ------------------------------------------------------------------ properties

    @property
    def channel_id(self) -> int:
        """The logical channel id bound into every envelope's AAD and key."""
        return self.secure.sealer.channel_id

    @property
    def rejected(self) -> dict[str, int]:
        """Messages that failed to open, by reason."""
        return dict(self.secure.opener.rejected)

    @property
    def key_id(self) -> int | None:
        """The current send epoch's key id."""
        return self.secure.sealer.key_id

    def rekey(self) -> None:
        """Start a new send epoch (new key, fresh nonce prefix) with the next message."""
        self.secure.sealer.request_rekey()

    # ------------------------------------------------------------------ sending

    async def _reserve(self, now: float) -> tuple[Any, EnvelopeHeader]:
        """The epoch key and header for the next message: the core Sealer's rules, one counter at a time.

        Running the core ``Sealer`` once for an empty message would also work,
        but it awaits the encryption; here the counter is taken synchronously so
        several encryptions can be in flight while the wire order stays the
        counter order.
        """
        sealer = self.secure.sealer
        async with self._epoch_lock:
            epoch = sealer._epoch
            if epoch is None or sealer._due(epoch, now):
                epoch = sealer._epoch = await sealer._new_epoch(now)
                sealer._rekey_requested = False
            header = EnvelopeHeader(epoch.key_id, epoch.prefix, epoch.next_counter)
            epoch.next_counter += 1  # burnt even if sealing fails: never reuse a nonce
            sealer.sealed += 1
            return epoch.key, header

    async def _seal(self, data: bytes, aad: bytes) -> bytes:
        now = asyncio.get_event_loop().time()
        key, header = await self._reserve(now)
        sealer = self.secure.sealer
        return await seal_envelope(self._crypto, key, header, sealer.channel_id,
                                   sealer.direction, data, aad)

    def _check(self) -> None:
        if self._send_error is not None:
            raise self._send_error

    async def submit(self, message: bytes | bytearray | memoryview | str,
                          aad: bytes = b"") -> None:
        """Queue ``message`` for sealing; returns once it has a place in the pipeline.

        Waits only while ``window`` encryptions are already in flight. Call
        :meth:`flush` (or :meth:`send`) to push everything out.
        """
        self._check()
        data = message.encode() if isinstance(message, str) else bytes(message)
        while len(self._pending) >= self.window:
            await self._emit_one()
        # Counters are taken in call order because _seal reaches _reserve
        # before its first real await in the common case (the epoch exists);
        # a new epoch is serialised by _epoch_lock, which is FIFO.
        task = asyncio.ensure_future(self._seal(data, aad))
        self._pending.append(task)

    async def _emit_one(self) -> None:
        async with self._send_lock:
            if not self._pending:
                return
            task = self._pending[0]
            try:
                envelope = await task
            except BaseException as exc:
                self._send_error = exc
                self._pending.popleft()
                raise
            self._pending.popleft()
            await self.transport.send(envelope)
            self.sent += 1

    async def flush(self) -> None:
        """Hand every queued envelope to the transport, in order."""
        while self._pending:
            await self._emit_one()
        self._check()

    async def send(self, message: bytes | bytearray | memoryview | str, aad: bytes = b"") -> None:
        """Seal and send one message (text is sent as UTF-8 bytes)."""
        await self.submit(message, aad)
        await self.flush()

    # ------------------------------------------------------------------ receiving

    async def receive(self, aad: bytes = b"") -> bytes:
        """The next message, decrypted and verified; ``DecryptionError`` if it does not open."""
        data = await self.transport.receive()
        now = asyncio.get_event_loop().time()
        if isinstance(data, str):  # a text frame cannot be an envelope
            raise self.secure.opener._fail(MALFORMED)
        plaintext = await self.secure.open(bytes(data), now, aad)
        self.received += 1
        return plaintext

    def __repr__(self) -> str:
        return f"<EncryptedChannel id={self.channel_id} sent={self.sent} received={self.received}>"


# ---------------------------------------------------------------------- seed API

_CHANNELS: weakref.WeakKeyDictionary[Any, tuple[bytes | None, EncryptedChannel]] = (
    weakref.WeakKeyDictionary()
)


def _pc_of(transport: Any) -> Any:
    for name in ("peer_connection", "pc"):
        pc = getattr(transport, name, None)
        if pc is not None:
            return pc
    session = getattr(transport, "session", None)
    return getattr(session, "pc", None) if session is not None else None


async def encrypted(transport: Any, key: bytes | None = None, *, role: Role | None = None,
                    session: AuthResult | None = None) -> EncryptedChannel:
    """The :class:`EncryptedChannel` kept for ``transport`` (made on first use).

    With ``key``: PSK mode (role from ``role``, else from the transport's
    connection). Without: session mode, using ``session`` or the connection's
    latest :func:`~pyapp.browser.auth.authenticate` result.
    """
    cached = _CHANNELS.get(transport)
    if cached is not None:
        if cached[0] != key:
            raise LocalProtocolError("this channel is already encrypted under another key")
        return cached[1]
    pc = _pc_of(transport)
    if key is not None:
        if role is None:
            if pc is None:
                raise LocalProtocolError("pass role=: the transport's connection is unknown")
            role = role_of(pc)
        chan = await EncryptedChannel.from_psk(transport, key, role)
    else:
        if session is None and pc is not None:
            session = session_of(pc)
        if session is None:
            raise LocalProtocolError(
                "no authenticated session: await pc.authenticate(identity) first, or pass key=")
        chan = EncryptedChannel.from_session(transport, session)
    _CHANNELS[transport] = (key, chan)
    return chan


async def send_encrypted(transport: Any, message: bytes | str, key: bytes | None = None, *,
                         role: Role | None = None, session: AuthResult | None = None) -> None:
    """Seed API: seal ``message`` and send it on ``transport`` (see :func:`encrypted`)."""
    await (await encrypted(transport, key, role=role, session=session)).send(message)


async def receive_encrypted(transport: Any, key: bytes | None = None, *,
                            role: Role | None = None,
                            session: AuthResult | None = None) -> bytes:
    """Seed API: the next message from ``transport``, opened; ``DecryptionError`` if it does not."""
    return await (await encrypted(transport, key, role=role, session=session)).receive()


__all__ += ["encrypted", "DecryptionError"]
