"""Character vocabulary: the sorted set of characters of a corpus.

The vocabulary travels inside every checkpoint as a plain string, so a checkpoint alone
can encode prompts and decode samples.
"""

from __future__ import annotations

import numpy as np
import torch

from charlm.errors import CharLMError


class Vocab:
    """Maps characters to ids (their rank in the sorted character set) and back."""

    def __init__(self, chars: str):
        if not chars:
            raise CharLMError("the vocabulary is empty: the corpus has no characters")
        if len(set(chars)) != len(chars) or list(chars) != sorted(chars):
            raise CharLMError("a vocabulary must be sorted, distinct characters")
        self.chars = chars
        self._codepoints = np.frombuffer(chars.encode("utf-32-le"), dtype=np.uint32)

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        codepoints = np.unique(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32))
        return cls(codepoints.astype("<u4").tobytes().decode("utf-32-le"))

    def __len__(self) -> int:
        return len(self.chars)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    def __repr__(self) -> str:
        return f"Vocab({len(self)} chars: {self.chars!r})"

    def encode(self, text: str) -> torch.Tensor:
        """Ids of `text` as a 1-D int64 tensor, vectorised: a million characters take milliseconds."""
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, codepoints)
        ids = np.minimum(ids, len(self) - 1)
        unknown = self._codepoints[ids] != codepoints
        if unknown.any():
            missing = "".join(sorted({chr(c) for c in codepoints[unknown]}))
            raise CharLMError(f"characters not in the vocabulary: {missing!r}; the vocabulary is {self.chars!r}")
        return torch.from_numpy(ids.astype(np.int64))

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[i] for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids))
