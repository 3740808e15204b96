"""A ZMTP 3.x stream parser fed with one TCP direction's in-order chunks.

How it works
------------
A ZMTP 3 stream starts with a 64-byte greeting (``0xFF``, 8 padding bytes, ``0x7F``, the
version 3.x, the mechanism name, ...). Then come frames: a flags byte (``0x01`` MORE,
``0x02`` LONG, ``0x04`` COMMAND) and the body size, one byte or (LONG) eight bytes big
endian, then the body. Commands (READY, PING, ...) are skipped; a message is the frames up
to and including the first one without MORE.

`ZmtpParser` is a state machine over `Chunk`s (see `orchestrator.pcaplat.streams`): it keeps
only the header bytes it is reading and the first `head_bytes` of each message's payload, so
memory does not grow with the stream. For each message it reports the stream offsets of its
first byte (the first frame's flags byte) and last byte (the last body byte), the capture
times of the segments that carried them, the payload size and its first bytes.

Unknown bytes (a short snaplen, a segment the capture missed): a message whose payload head
was not captured is still reported, with a shorter ``head``; a frame header that was not
captured loses the framing, and the rest of the stream is counted in `lost_bytes` (never an
exception). A stream that does not start with a ZMTP 3 greeting is marked ``not_zmtp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.pcaplat.streams import Chunk, FlowKey

GREETING_BYTES = 64
MORE = 0x01
LONG = 0x02
COMMAND = 0x04
HEAD_BYTES = 128  # enough for the bcfl envelope's header (type and sender <= 32 chars)

_GREETING, _FLAGS, _SIZE, _BODY, _LOST, _NOT_ZMTP = range(6)


@dataclass(frozen=True)
class ZmtpMessage:
    """One ZeroMQ message seen in one direction of one capture: stream offsets and capture
    times (wall-clock ms) of its first and last byte, payload size, frames, and the first
    payload bytes captured (fewer than asked when they were not captured)."""

    key: FlowKey
    first_offset: int
    last_offset: int
    first_ms: float
    last_ms: float
    size: int
    parts: int
    head: bytes


class ZmtpParser:
    """Parses one direction's stream; calls `on_message` for every complete message."""

    def __init__(
        self,
        key: FlowKey,
        on_message: Callable[[ZmtpMessage], None],
        head_bytes: int = HEAD_BYTES,
    ) -> None:
        self.key = key
        self._on_message = on_message
        self._head_bytes = head_bytes
        self._state = _GREETING
        self._buf = bytearray()  # greeting or frame-header bytes being read
        self._flags = 0
        self._remaining = 0  # body bytes still to come in the current frame
        self._msg_start: tuple[int, float] | None = None
        self._msg_size = 0
        self._msg_parts = 0
        self._head = bytearray()
        self._head_open = True  # no unknown byte yet among the head's
        self.greeted = False  # a whole ZMTP 3 greeting was read
        self.messages = 0
        self.commands = 0
        self.lost_bytes = 0
        self.incomplete = False  # the stream ended inside a message

    @property
    def not_zmtp(self) -> bool:
        """Whether the stream did not start with a ZMTP 3 greeting."""
        return self._state == _NOT_ZMTP

    @property
    def lost(self) -> bool:
        """Whether a frame header was not captured (the rest of the stream is unparsed)."""
        return self._state == _LOST

    def feed(self, chunk: Chunk) -> None:
        """Take the next in-order chunk."""
        pos = 0
        n = chunk.length
        while pos < n:
            if self._state in (_LOST, _NOT_ZMTP):
                self.lost_bytes += n - pos
                return
            if self._state == _BODY:
                pos = self._body(chunk, pos)
                continue
            if pos >= len(chunk.data):  # a header byte that was not captured
                self._lose(n - pos)
                return
            byte = chunk.data[pos]
            offset = chunk.offset + pos
            pos += 1
            if self._state == _GREETING:
                self._greeting(byte)
            elif self._state == _FLAGS:
                self._frame_flags(byte, offset, chunk.ts_ms)
            else:
                self._size_byte(byte, offset, chunk.ts_ms)

    def close(self) -> None:
        """The stream ended."""
        self.incomplete = self._state == _BODY or bool(self._buf) or self._msg_start is not None

    def _lose(self, count: int) -> None:
        self._state = _LOST
        self.lost_bytes += count
        self._msg_start = None

    def _greeting(self, byte: int) -> None:
        self._buf.append(byte)
        i = len(self._buf) - 1
        if (i == 0 and byte != 0xFF) or (i == 9 and byte & 0x01 == 0) or (i == 10 and byte < 3):
            self._state = _NOT_ZMTP
            return
        if len(self._buf) == GREETING_BYTES:
            self.greeted = True
            self._buf.clear()
            self._state = _FLAGS

    def _frame_flags(self, byte: int, offset: int, ts_ms: float) -> None:
        if byte & ~(MORE | LONG | COMMAND):  # reserved bits set: not a frame
            self._lose(0)
            return
        self._flags = byte
        if not byte & COMMAND and self._msg_start is None:
            self._msg_start = (offset, ts_ms)
            self._msg_size = 0
            self._msg_parts = 0
            self._head.clear()
            self._head_open = True
        self._buf.clear()
        self._state = _SIZE

    def _size_byte(self, byte: int, offset: int, ts_ms: float) -> None:
        self._buf.append(byte)
        if len(self._buf) < (8 if self._flags & LONG else 1):
            return
        self._remaining = int.from_bytes(self._buf, "big")
        self._buf.clear()
        if not self._flags & COMMAND:
            self._msg_parts += 1
        self._state = _BODY
        if self._remaining == 0:
            self._frame_done(offset, ts_ms)  # an empty body: the size byte is the last

    def _body(self, chunk: Chunk, pos: int) -> int:
        take = min(self._remaining, chunk.length - pos)
        if not self._flags & COMMAND:
            want = self._head_bytes - len(self._head)
            if want > 0 and self._head_open:
                got = chunk.data[pos : pos + min(take, want)]
                self._head += got
                if len(got) < min(take, want):
                    self._head_open = False
            self._msg_size += take
        self._remaining -= take
        pos += take
        if self._remaining == 0:
            self._frame_done(chunk.offset + pos - 1, chunk.ts_ms)
        return pos

    def _frame_done(self, last_offset: int, ts_ms: float) -> None:
        self._state = _FLAGS
        if self._flags & COMMAND:
            self.commands += 1
            return
        if self._flags & MORE:
            return
        assert self._msg_start is not None
        first_offset, first_ms = self._msg_start
        self._msg_start = None
        self.messages += 1
        self._on_message(
            ZmtpMessage(
                self.key,
                first_offset,
                last_offset,
                first_ms,
                ts_ms,
                self._msg_size,
                self._msg_parts,
                bytes(self._head),
            )
        )
