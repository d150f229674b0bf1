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

Batching: each WebCrypto call costs at least one event-loop turn in Pyodide,
so the channel seals and opens in batches with one JS call per batch.
:meth:`EncryptedChannel.submit` takes the next counter at once (wire order =
call order, :meth:`Sealer.reserve <pyapp.core.security.envelope.Sealer.reserve>`)
and seals every ``window`` messages; :meth:`EncryptedChannel.flush` pushes out
the rest; :meth:`EncryptedChannel.send` is ``submit`` + ``flush``. ``receive``
opens every message already waiting in the transport (up to ``window``)
together through the core's
:meth:`Opener.open_many <pyapp.core.security.envelope.Opener.open_many>` (replay
and tag checks one message at a time, in order; epoch changes message by message).

The documented functions :func:`send_encrypted` / :func:`receive_encrypted` keep
one EncryptedChannel per transport object, in the connection's
:class:`~pyapp.browser.auth.SecurityState` (so it goes away with the
connection); a transport whose connection is unknown needs an explicit
``session=`` or ``key=`` and ``role=``, and is then cached on the transport.

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
from collections import deque
from typing import Any, Protocol

from pyapp.browser.auth import AuthResult, role_of, security_of
from pyapp.browser.crypto import default_crypto
from pyapp.browser.timer import now as _now
from pyapp.core.security.envelope import (
    RekeyPolicy,
    SecureChannel,
    envelope_aad,
)
from pyapp.core.security.interface import AeadKey, Crypto
from pyapp.core.security.keys import Role, derive_psk_secrets
from pyapp.exceptions import DecryptionError, LocalProtocolError

__all__ = [
    "EncryptedChannel",
    "MessageChannel",
    "RekeyPolicy",
    "encrypted",
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
    # The replay policy only needs to know whether messages arrive in send order
    # (gaps are fine for the strict counter): ordered channels, reliable or not.
    reliability = getattr(transport, "reliability", None)
    if reliability is not None:
        return bool(getattr(reliability, "ordered", True))
    return bool(getattr(transport, "ordered", True))


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
        # Messages with their counters taken, waiting to be sealed as one batch.
        self._batch: list[tuple[AeadKey, bytes, bytes, bytes, bytes]] = []
        self._send_lock = asyncio.Lock()
        # Receive side: raw messages read ahead, and opened results (plaintext or error).
        self._raw: deque[bytes | str] = deque()
        self._ready: deque[bytes | DecryptionError] = deque()
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

    def _check(self) -> None:
        if self._send_error is not None:
            raise self._send_error

    async def submit(self, message: bytes | bytearray | memoryview | str,
                     aad: bytes = b"") -> None:
        """Queue ``message``; every ``window`` messages the batch is sealed and sent.

        Call :meth:`flush` (or :meth:`send`) to push out a partial batch.
        """
        self._check()
        data = message.encode() if isinstance(message, str) else bytes(message)
        async with self._send_lock:
            sealer = self.secure.sealer
            key, header = await sealer.reserve(_now())
            full_aad = envelope_aad(header, sealer.channel_id, sealer.direction, aad)
            self._batch.append((key, header.nonce, data, full_aad, header.encode()))
            if len(self._batch) >= self.window:
                await self._emit()

    async def _emit(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        try:
            seal_many = getattr(self._crypto, "aead_seal_many", None)
            if seal_many is not None:
                envelopes = await seal_many(batch)
            else:  # another Crypto (e.g. the CPython oracle): one call per message
                envelopes = [prefix + await self._crypto.aead_seal(k, n, p, a)
                             for k, n, p, a, prefix in batch]
            for envelope in envelopes:
                await self.transport.send(envelope)
                self.sent += 1
        except BaseException as exc:
            self._send_error = exc  # the wire order is broken from here on
            raise

    async def flush(self) -> None:
        """Seal and hand every queued message to the transport, in order."""
        self._check()
        async with self._send_lock:
            await self._emit()

    async def send(self, message: bytes | bytearray | memoryview | str, aad: bytes = b"") -> None:
        """Seal and send one message (text is sent as UTF-8 bytes)."""
        await self.submit(message, aad)
        await self.flush()

    # ------------------------------------------------------------------ receiving

    async def receive(self, aad: bytes = b"") -> bytes:
        """The next message, decrypted and verified; ``DecryptionError`` if it does not open.

        A failed message is dropped (and counted); the next call goes on with
        the one after it. Messages already waiting in the transport are opened
        together (one WebCrypto call for up to ``window`` of them).
        """
        while not self._ready:
            await self._open_next_batch(aad)
        item = self._ready.popleft()
        if isinstance(item, DecryptionError):
            raise item
        self.received += 1
        return item

    async def _read_batch(self) -> list[bytes | str]:
        t = self.transport
        batch = [self._raw.popleft() if self._raw else await t.receive()]
        if hasattr(t, "queued_inbound"):  # a MultiplexedChannel: receive() will not block
            while len(batch) < self.window and t.queued_inbound > 0:
                batch.append(await t.receive())
        elif hasattr(t, "receive_nowait"):  # a DataChannel
            self._raw.extend(t.receive_nowait())
        while len(batch) < self.window and self._raw:
            batch.append(self._raw.popleft())
        return batch

    async def _open_next_batch(self, aad: bytes) -> None:
        batch = await self._read_batch()
        self._ready.extend(await self.secure.opener.open_many(batch, _now(), aad))

    def __repr__(self) -> str:
        return f"<EncryptedChannel id={self.channel_id} sent={self.sent} received={self.received}>"


# ---------------------------------------------------------------------- documented API

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
    pc = _pc_of(transport)
    cache: dict[int, tuple[Any, bytes | None, Any]]
    if pc is not None:
        cache = security_of(pc).encrypted
    else:  # no connection known: keep it on the transport object itself
        cache = transport.__dict__.setdefault("_pyapp_encrypted", {})
    cached = cache.get(id(transport))
    if cached is not None and cached[0] is transport:
        if cached[1] != key:
            raise LocalProtocolError("this channel is already encrypted under another key")
        return cached[2]
    if key is not None:
        if role is None:
            if pc is None:
                raise LocalProtocolError("pass role=: the transport's connection is unknown")
            role = role_of(pc)
        chan = await EncryptedChannel.from_psk(transport, key, role)
    else:
        if session is None and pc is not None:
            session = security_of(pc).session
        if session is None:
            raise LocalProtocolError(
                "no authenticated session: await pc.authenticate(identity) first, or pass key=")
        chan = EncryptedChannel.from_session(transport, session)
    cache[id(transport)] = (transport, key, chan)
    return chan


async def send_encrypted(transport: Any, message: bytes | str, key: bytes | None = None, *,
                         role: Role | None = None, session: AuthResult | None = None) -> None:
    """Seal ``message`` and send it on ``transport`` (see :func:`encrypted`)."""
    await (await encrypted(transport, key, role=role, session=session)).send(message)


async def receive_encrypted(transport: Any, key: bytes | None = None, *,
                            role: Role | None = None,
                            session: AuthResult | None = None) -> bytes:
    """The next message from ``transport``, opened; ``DecryptionError`` if it does not."""
    return await (await encrypted(transport, key, role=role, session=session)).receive()

