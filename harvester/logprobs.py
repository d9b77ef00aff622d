"""The teacher's token probabilities: read from a chat completion, packed into one compact blob per answer.

OpenAI's `choices[0].logprobs.content` is a list of `ChatCompletionTokenLogprob` (token, logprob, bytes,
top_logprobs: [{token, logprob, bytes}]): as JSON, some 60 bytes per alternative. Packed here: the floats
as little-endian arrays, the token texts joined with their lengths, the whole zlib-compressed. Exact:
float32 when every value is one (what vLLM and other float32 servers send), else float64; a decoded
blob gives back the same tokens and the same float values as the JSON did. Pure, no I/O.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .providers.chat import Token

_MAGIC = b"LP1"
_HEADER = struct.Struct("<3sBII")    # magic, float width (4 or 8), tokens, alternatives


def pack(tokens: list[Token]) -> bytes:
    """The tokens as one compact blob (see the module's docstring)."""
    counts = np.fromiter((len(t[2]) for t in tokens), dtype="<u4", count=len(tokens))
    chosen = np.fromiter((t[1] for t in tokens), dtype="<f8", count=len(tokens))
    alts = np.fromiter((lp for t in tokens for _, lp in t[2]), dtype="<f8", count=int(counts.sum()))
    # float32 where it loses nothing: every value converts to float32 and back unchanged
    narrow = all(np.array_equal(a.astype("<f4").astype("<f8"), a) for a in (chosen, alts))
    floats = "<f4" if narrow else "<f8"
    texts = [t[0] for t in tokens] + [alt for t in tokens for alt, _ in t[2]]
    encoded = [s.encode("utf-8", "surrogatepass") for s in texts]
    lengths = np.fromiter((len(b) for b in encoded), dtype="<u4", count=len(encoded))
    body = b"".join((counts.tobytes(), chosen.astype(floats).tobytes(), alts.astype(floats).tobytes(),
                     lengths.tobytes(), *encoded))
    return _HEADER.pack(_MAGIC, 4 if narrow else 8, len(tokens), len(alts)) + zlib.compress(body, 6)


@dataclass(frozen=True, slots=True)
class Arrays:
    """A blob's contents as arrays: per token its alternatives' count and its logprob; the alternatives'
    logprobs; the UTF-8 lengths of every text (the tokens', then the alternatives'), and those texts joined."""

    counts: np.ndarray[Any, Any]
    chosen: np.ndarray[Any, Any]      # float64
    alts: np.ndarray[Any, Any]        # float64
    lengths: np.ndarray[Any, Any]
    texts: bytes


def arrays(blob: bytes) -> Arrays:
    """A blob unpacked into arrays, without a Python object per token (the export builds its column from them)."""
    magic, width, n, m = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError("not a harvester logprobs blob")
    body = zlib.decompress(blob[_HEADER.size:])
    floats = "<f4" if width == 4 else "<f8"
    at = 0

    def take(dtype: str, count: int) -> np.ndarray[Any, Any]:
        nonlocal at
        arr = np.frombuffer(body, dtype=dtype, count=count, offset=at)
        at += arr.nbytes
        return arr

    counts, chosen, alts = take("<u4", n), take(floats, n).astype("<f8"), take(floats, m).astype("<f8")
    lengths = take("<u4", n + m)
    return Arrays(counts, chosen, alts, lengths, body[at:])


def unpack(blob: bytes) -> list[Token]:
    """The tokens a blob holds, exactly as packed."""
    a = arrays(blob)
    n = len(a.counts)
    counts, chosen, alts = a.counts.tolist(), a.chosen.tolist(), a.alts.tolist()
    texts = []
    at = 0
    for size in a.lengths.tolist():
        texts.append(a.texts[at:at + size].decode("utf-8", "surrogatepass"))
        at += size
    out: list[Token] = []
    alt_at = 0
    for i in range(n):
        k = counts[i]
        out.append((texts[i], chosen[i], list(zip(texts[n + alt_at:n + alt_at + k], alts[alt_at:alt_at + k]))))
        alt_at += k
    return out


def wanted(params: dict[str, Any]) -> int | None:
    """The top-k a request asks for (0: logprobs of the chosen tokens only), None if it asks for no logprobs."""
    if params.get("logprobs") is not True:
        return None
    return int(params.get("top_logprobs") or 0)
