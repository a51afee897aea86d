"""An HTTP body `{"requests": [...]}` -> grounding requests, or for a bad entry that entry's error.

The body's outline is read without building it: each entry of `requests` is found by matching its
brackets and strings, so a body with more entries than allowed is refused when the first entry too
many is reached, whatever follows. Each entry is then read alone by `engine.wire.entry_from_json`,
the reader of a line of `seqpan ground --requests`, so an entry
gets the answer (or the error) that a line of a requests file gets: one the parser refuses (not
UTF-8, NaN, an integer of thousands of digits, nested too deeply) is that entry's error alone."""
from __future__ import annotations

import codecs
import re

from reference.errors import SeqPANError

from ..errors import RequestError
from ..limits import Limits
from ..wire import entry_from_json, parse_json
from ..requests import GroundingRequest, GroundingResult, json_value

SPACE = re.compile(rb"[ \t\n\r]*")
STRING_PATTERN = rb'"[^"\\]*(?:\\.[^"\\]*)*"'  # a whole JSON string, escapes included
STRING = re.compile(STRING_PATTERN, re.S)
SCALAR = re.compile(rb"[^,\]}\s]*")  # a number, true, false, null (or a bad token: the entry's parser says)
# the tokens of a nested value: a string, a bracket, or a run of anything else (numbers, commas, ...)
NESTED = re.compile(STRING_PATTERN + rb'|[\[\]{}"]|[^\[\]{}"]+', re.S)
PARTS_PER_ENTRY = 64  # arrays, objects and strings a body may hold: one video's clips, and this many per entry
NOT_AN_OBJECT = 'body must be a JSON object {"requests": [...]}'


class BodyError(SeqPANError, ValueError):
    """A body that is not JSON, or has no `requests` list: the whole HTTP request is refused (400)."""


class BodyTooLarge(SeqPANError, ValueError):
    """A body with more entries, or more arrays, objects and strings, than one body may hold (413);
    found while its outline is read, before the excess is parsed."""


def parse_body(body: bytes, limits: Limits, max_entries: int) -> list[GroundingRequest | GroundingResult]:
    """One entry per element of `requests`: a request (its id defaults to its position), or an
    error result naming the position. Raises BodyError for a body that is not an object with a
    `requests` list (a UTF-8 byte-order mark at the start is skipped, as in requests files), and
    BodyTooLarge for more than `max_entries` entries or more arrays, objects and strings than
    `limits.max_clips + 64 * max_entries`. Fields other than `requests` are skipped (their brackets
    and strings matched, not parsed). Feature paths stay as given: the engine confines them."""
    return _Outline(body, limits.max_clips + PARTS_PER_ENTRY * max_entries).requests(limits, max_entries)


class _Outline:
    """A reader of the body's outline: positions of members and entries, and of what closes a value."""

    def __init__(self, body: bytes, max_parts: int):
        self.body, self.parts_left = body, max_parts

    def at(self, pos: int) -> bytes:
        return self.body[pos:pos + 1]

    def space(self, pos: int) -> int:
        return SPACE.match(self.body, pos).end()

    def requests(self, limits: Limits, max_entries: int) -> list[GroundingRequest | GroundingResult]:
        body = self.body
        pos = self.space(len(codecs.BOM_UTF8) if body.startswith(codecs.BOM_UTF8) else 0)
        if self.at(pos) != b"{":
            raise BodyError(NOT_AN_OBJECT)
        entries = None
        pos = self.space(pos + 1)
        while self.at(pos) != b"}":  # one member a turn
            key, pos = self.key(pos)
            if key == "requests":
                if entries is not None:
                    raise BodyError('body: "requests" is given twice')
                entries, pos = self.entries(pos, limits, max_entries)
            else:
                pos = self.value_end(pos)
            pos = self.space(pos)
            if self.at(pos) == b",":
                pos = self.space(pos + 1)
                if self.at(pos) == b"}":
                    raise BodyError(f"body: not valid JSON: a comma before '}}' at byte {pos}")
            elif self.at(pos) != b"}":
                raise BodyError(f"body: not valid JSON: expected ',' or '}}' at byte {pos}")
        if self.space(pos + 1) != len(body):
            raise BodyError(f"body: not valid JSON: extra data after the object at byte {pos + 1}")
        if entries is None:
            raise BodyError(NOT_AN_OBJECT)
        return entries

    def key(self, pos: int) -> tuple[str, int]:
        """A member's key (decoded) and the position of its value."""
        match = STRING.match(self.body, pos)
        if match is None:
            raise BodyError(f"body: not valid JSON: expected a quoted key at byte {pos}")
        try:
            key = parse_json(match.group())
        except RequestError as err:
            raise BodyError(f"body: a key is {err}") from None
        colon = self.space(match.end())
        if self.at(colon) != b":":
            raise BodyError(f"body: not valid JSON: expected ':' at byte {colon}")
        return key, self.space(colon + 1)

    def entries(self, pos: int, limits: Limits, max_entries: int):
        """The entries of the `requests` array starting at `pos`, and the position after it."""
        if self.at(pos) != b"[":
            raise BodyError(NOT_AN_OBJECT)
        entries: list[GroundingRequest | GroundingResult] = []
        pos = self.space(pos + 1)
        if self.at(pos) == b"]":
            return entries, pos + 1
        while True:
            if len(entries) == max_entries:
                raise BodyTooLarge(f"more than {max_entries} requests in one body; at most {max_entries}")
            end = self.value_end(pos)
            entries.append(_entry(self.body[pos:end], len(entries), limits))
            pos = self.space(end)
            if self.at(pos) == b"]":
                return entries, pos + 1
            if self.at(pos) != b",":
                raise BodyError(f"body: not valid JSON: expected ',' or ']' after requests[{len(entries) - 1}]")
            pos = self.space(pos + 1)

    def value_end(self, pos: int) -> int:
        """Where the JSON value starting at `pos` ends: after its string, after the bracket that
        closes its own, or (a scalar) before the next delimiter. BodyError when nothing closes it."""
        first = self.at(pos)
        if first not in (b"[", b"{"):
            match = (STRING if first == b'"' else SCALAR).match(self.body, pos)
            if match is None:
                raise BodyError(f"body: not valid JSON: unterminated string at byte {pos}")
            if match.end() == pos:
                raise BodyError(f"body: not valid JSON: expected a value at byte {pos}")
            return match.end()
        depth = 0
        for match in NESTED.finditer(self.body, pos):
            token = match.group()
            if token in (b"[", b"{"):
                depth += 1
            elif token in (b"]", b"}"):
                depth -= 1
                if depth == 0:
                    return match.end()
                continue
            elif token == b'"':
                raise BodyError(f"body: not valid JSON: unterminated string at byte {match.start()}")
            elif token[0] != ord('"'):  # a run of numbers, commas, spaces, ...
                continue
            self.parts_left -= 1  # an array, an object or a string
            if self.parts_left < 0:
                raise BodyTooLarge("more arrays, objects and strings in one body than its requests can use")
        raise BodyError("body: not valid JSON: a bracket is never closed")


def _entry(text: bytes, index: int, limits: Limits) -> GroundingRequest | GroundingResult:
    """One entry's request, or its error result named `requests[index]`."""
    request = entry_from_json(text, f"requests[{index}]", default_id=index, limits=limits)
    if isinstance(request, GroundingResult):
        return request
    if request.id is not None and json_value(request.id) is None:  # an integer of thousands of digits
        return GroundingResult(id=None, error=f"requests[{index}]: id is an integer too long to be written back; "
                                              "send it as a string")
    return request
