"""One stream's samples, in order: its documents (a `StreamOrder`), encoded a batch at a time,
each cut into pieces of at most `length` tokens (`cut_document`, slamkit's context-length
chunks). The streams are mixed per sample, so a sample is what a stream weight counts.

A position is (document position, piece of that document); everything a stream yields from a
position depends only on that position, so a restored pipeline needs no more than it.
"""

from __future__ import annotations

import numpy as np

from jaxslm.data.encode import ChunkEncoder
from jaxslm.data.packing import cut_document
from jaxslm.data.record_order import StreamOrder

Sample = tuple[np.ndarray, np.ndarray]  # token ids, modality (views into an encoded batch)
Position = tuple[int, int]  # document position in the StreamOrder, piece within it


class SampleStream:
    """The samples of stream `code` (0 text, 1 interleaved, 2 speech) in `order`, encoding
    `batch_documents` documents at a time and keeping the last batch for the next `take`."""

    def __init__(
        self,
        order: StreamOrder,
        code: int,
        encoder: ChunkEncoder,
        length: int,
        batch_documents: int,
    ):
        self.order, self.code, self.encoder = order, code, encoder
        self.length, self.batch_documents = length, batch_documents
        self._first = 0  # document position of self._pieces[0]
        self._pieces: list[list[Sample]] = []

    def exhausted(self, position: Position) -> bool:
        """Whether no document is left from `position` on (finite runs only)."""
        left = self.order.remaining(position[0])
        return left is not None and left <= 0

    def take(self, position: Position, count: int) -> tuple[list[Sample], Position]:
        """Up to `count` samples from `position` (fewer where the stream ends) and the position
        after them; a document's last piece moves the position on to the next document."""
        document, piece = position
        samples: list[Sample] = []
        while len(samples) < count:
            pieces = self._document(document)
            if pieces is None:
                break
            taken = pieces[piece : piece + count - len(samples)]
            samples += taken
            piece += len(taken)
            if piece >= len(pieces):
                document, piece = document + 1, 0
        return samples, (document, piece)

    def _document(self, document: int) -> list[Sample] | None:
        """The pieces of the document at `document` (None past the end of a finite stream)."""
        index = document - self._first
        if not 0 <= index < len(self._pieces):
            self._encode_from(document)
            index = 0
        return self._pieces[index] if self._pieces else None

    def _encode_from(self, document: int) -> None:
        left = self.order.remaining(document)
        size = self.batch_documents if left is None else max(0, min(self.batch_documents, left))
        self._first, self._pieces = document, []
        if size == 0:
            return
        records = self.order.take(document, size)
        chunk = self.encoder.encode([(self.code, record, epoch) for record, epoch in records])
        self._pieces = [cut_document(*chunk.document(i), self.length) for i in range(size)]
