"""Turning generated tokens into text as they arrive: bytes decoded incrementally (a character
split across two tokens waits for its second half) and stop strings matched across token
boundaries, holding back only the tail that could still be the start of a stop string."""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        self._held = ""  # decoded text not yet given out (may begin a stop string)
        self.stopped = False  # a stop string was reached: the answer ends before it

    def add(self, data: bytes) -> str:
        """Text that can be sent now, after the bytes of one more token."""
        if self.stopped:
            return ""
        self._held += self._decoder.decode(data)
        hits = [i for i in (self._held.find(s) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            out, self._held = self._held[: min(hits)], ""
            return out
        keep = max((_overlap(self._held, s) for s in self._stop), default=0)
        out = self._held[: len(self._held) - keep]
        self._held = self._held[len(out) :]
        return out

    def flush(self) -> str:
        """What is left when the answer ends for another reason (length, end of text)."""
        if self.stopped:
            return ""
        out, self._held = self._held + self._decoder.decode(b"", final=True), ""
        return out


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a proper start of `stop`."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
