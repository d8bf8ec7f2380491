"""The usual ExaBGP UPDATE line as typed structures, decoded and type-checked in C (msgspec).

The router's intake reads most lines through this schema (``exabgp_json._typed_update``):
one ``msgspec`` call turns a line into the few objects below, with every value dyncast
reads already checked for its type and range, where the standard library's ``json``
builds a dict for every object of the line (header, neighbor, each community, ...)
and leaves each check to Python code. Keys the schema does not name are skipped
(their JSON still checked); a line the schema does not fit raises, and the general
reader (``json`` and ``exabgp_json._event``) reads it and words whatever is wrong, so
no error message depends on this module. Decision 0012 says why this parser and what
it changed in the intake benchmark.

What the schema accepts is a subset of what ``json.loads`` accepts, but for one
case the caller guards. ``msgspec`` refuses ``NaN``/``Infinity`` and lone surrogate
escapes, which ``json`` takes; both refuse control characters in strings; it reads
duplicate keys as ``json`` does (the last one counts) and matches escaped keys
(``"as\\u002dpath"``) to fields as ``json`` decodes them; integers are never read
from ``true``, ``false`` or a float. The one case: an integer of more digits than
Python's int-string limit (4,300 by default) in a key the schema skips, which
``msgspec`` skips and ``json`` refuses; ``_typed_update`` leaves any line with such
a digit run to the general reader. These behaviours
were checked on msgspec 0.22. ``tests/property/test_exabgp_json_props.py`` holds
the typed reader's results equal to the general reader's on generated, mutated,
re-spaced and spliced lines, escaped keys and long integers.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

__all__ = ["UNSET", "Line", "decode_line"]

UInt32 = Annotated[int, Meta(ge=0, le=0xFFFF_FFFF)]

# gc=False: these objects live for one line and hold no cycle, so the collector need not track them


class Community(Struct, gc=False):
    """``{ "value": 9439864228206477312, "string": "" }``: only the value is read. Its range (64 bits) is
    checked where the values are packed (``struct.error``): msgspec bounds stop at 64-bit signed."""

    value: int


class Segment(Struct, gc=False):
    """An AS path segment in ExaBGP 5.0's shape: ``{ "element": "as-sequence", "value": [ 65001 ] }``."""

    element: str
    value: list[UInt32]


class Attributes(Struct, rename="kebab", gc=False):
    """The path attributes dyncast reads; ``as_set`` only says whether the key is there."""

    origin: str | None = None
    as_path: list[UInt32] | dict[str, Segment] | None = None  # 4.2: a list; 5.0: numbered segments
    as_set: Any | UnsetType = UNSET
    med: UInt32 | None = None
    local_preference: UInt32 | None = None
    extended_community: list[Community] | None = None


class Nlri(Struct, rename="kebab", gc=False):
    """``{ "nlri": "203.0.113.10/32", "path-information": "0.0.0.1" }``."""

    nlri: str
    path_information: str | int | None = None


class Update(Struct, gc=False):
    """``neighbor.message.update``: announcements by family and next hop, or withdrawals (decoded as ``json``
    would: the general path's reader reads them). An UPDATE with both is the general path's."""

    attribute: Attributes | UnsetType = UNSET
    announce: dict[str, dict[str, list[Nlri]]] | UnsetType = UNSET
    withdraw: Any | UnsetType = UNSET


class Message(Struct, gc=False):
    update: Update


class Address(Struct, gc=False):
    peer: str


class Neighbor(Struct, gc=False):
    address: Address
    message: Message
    direction: Any = "receive"


class Line(Struct, gc=False):
    """A whole line; ``exabgp`` (any value) must be there, as the general reader requires."""

    exabgp: Any
    type: str
    neighbor: Neighbor


decode_line: Final = msgspec.json.Decoder(Line).decode
"""``decode_line(text) -> Line``; raises ``msgspec.DecodeError`` (or ``ValidationError``, a subclass) when
the text is not JSON or does not fit the schema."""
