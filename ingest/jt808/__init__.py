"""JT/T 808 (2011/2013/2019): codec, columnar position decoder, TCP gateway.

The codec modules and the gateway's session core (:mod:`ingest.jt808.session`)
are pure (bytes and time in, values and actions out); :mod:`ingest.jt808.tcp`
(the asyncio adapter) and :mod:`ingest.jt808.registrations` (the registration
store) do I/O. The ingest stage calls :func:`decode_position_payloads`.
"""

from ingest.jt808.bits import alarm_names, status_names
from ingest.jt808.codec import (
    Decoded,
    decode_frame,
    encode_authentication,
    encode_heartbeat,
    encode_location,
    encode_location_batch,
    encode_logout,
    encode_message,
    encode_platform_reply,
    encode_registration,
    encode_registration_reply,
    encode_split,
    encode_terminal_reply,
)
from ingest.jt808.frame import Frame, Header, build_frame, parse_frame
from ingest.jt808.framing import FrameSplitter, checksum, escape, split_frames, unescape
from ingest.jt808.messages import (
    Authentication,
    Heartbeat,
    Location,
    LocationBatch,
    Logout,
    Message,
    PlatformReply,
    RawMessage,
    Registration,
    RegistrationReply,
    SplitPart,
    TerminalReply,
)
from ingest.jt808.position import (
    DecodedPayloads,
    decode_position_payloads,
    decode_position_payloads_scalar,
)
from ingest.jt808.reassembly import Reassembler

__all__ = [
    "Authentication",
    "Decoded",
    "DecodedPayloads",
    "Frame",
    "FrameSplitter",
    "Header",
    "Heartbeat",
    "Location",
    "LocationBatch",
    "Logout",
    "Message",
    "PlatformReply",
    "RawMessage",
    "Reassembler",
    "Registration",
    "RegistrationReply",
    "SplitPart",
    "TerminalReply",
    "alarm_names",
    "build_frame",
    "checksum",
    "decode_frame",
    "decode_position_payloads",
    "decode_position_payloads_scalar",
    "encode_authentication",
    "encode_heartbeat",
    "encode_location",
    "encode_location_batch",
    "encode_logout",
    "encode_message",
    "encode_platform_reply",
    "encode_registration",
    "encode_registration_reply",
    "encode_split",
    "encode_terminal_reply",
    "escape",
    "parse_frame",
    "split_frames",
    "status_names",
    "unescape",
]
