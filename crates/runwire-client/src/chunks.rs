//! Reassembles `output.chunk` events into whole outputs (spec §3.11).

use std::collections::BTreeMap;

use runwire_protocol::{ChunkEncoding, OutputChunkData};

/// A whole output, put back together from its chunks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The output's id within its run.
    pub output_id: String,
    /// The media type, from the first chunk that carried one.
    pub media_type: Option<String>,
    /// How the chunks were encoded (all chunks of one output share it).
    pub encoding: ChunkEncoding,
    /// The concatenated `data` of every chunk, in index order, still encoded: text
    /// for `utf8`, base64 text for `base64` (decode it with any base64 library;
    /// chunks of a base64 output are each complete base64, so they are decoded
    /// chunk by chunk, see [`Output::base64_parts`]).
    pub data: String,
    /// The byte offsets where each chunk's data starts in `data`.
    chunk_starts: Vec<usize>,
}

impl Output {
    /// The `data` of each chunk, in index order.
    pub fn base64_parts(&self) -> impl Iterator<Item = &str> {
        let ends = self
            .chunk_starts
            .iter()
            .skip(1)
            .copied()
            .chain(std::iter::once(self.data.len()));
        self.chunk_starts
            .iter()
            .zip(ends)
            .map(|(&a, b)| &self.data[a..b])
    }
}

/// Why a chunk could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    /// A chunk's index is not the next expected one for its output.
    #[error("output {output_id:?}: expected chunk index {expected}, got {got}")]
    OutOfOrder {
        /// The output.
        output_id: String,
        /// The index expected next.
        expected: u32,
        /// The index received.
        got: u32,
    },
    /// A chunk's encoding differs from the output's first chunk.
    #[error("output {output_id:?}: chunk {index} changes the encoding")]
    EncodingChanged {
        /// The output.
        output_id: String,
        /// The chunk's index.
        index: u32,
    },
    /// An output grew past the configured limit.
    #[error("output {output_id:?} exceeds {max} bytes")]
    TooLarge {
        /// The output.
        output_id: String,
        /// The limit.
        max: usize,
    },
}

#[derive(Debug)]
struct Partial {
    out: Output,
    next: u32,
}

/// Collects chunks by `output_id` until the one with `last` set. Feed it the
/// `output.chunk` payloads of one run in seq order (which the client guarantees);
/// it checks that indexes go 0, 1, 2, … and returns each output once complete.
#[derive(Debug)]
pub struct ChunkAssembler {
    partial: BTreeMap<String, Partial>,
    max_output_bytes: usize,
}

impl Default for ChunkAssembler {
    fn default() -> Self {
        Self::new(64 * 1024 * 1024)
    }
}

impl ChunkAssembler {
    /// An assembler that refuses outputs larger than `max_output_bytes`.
    pub fn new(max_output_bytes: usize) -> Self {
        Self {
            partial: BTreeMap::new(),
            max_output_bytes,
        }
    }

    /// Outputs started and not yet complete.
    pub fn in_progress(&self) -> usize {
        self.partial.len()
    }

    /// Drops a partial output (e.g. after a `reset`, whose snapshot does not carry
    /// chunks).
    pub fn discard(&mut self, output_id: &str) {
        self.partial.remove(output_id);
    }

    /// Drops every partial output.
    pub fn clear(&mut self) {
        self.partial.clear();
    }

    /// Takes one chunk; returns the output when this chunk completes it. On an
    /// error the partial output is dropped.
    pub fn push(&mut self, chunk: &OutputChunkData) -> Result<Option<Output>, ChunkError> {
        let id = &chunk.output_id;
        let partial = match self.partial.get_mut(id) {
            Some(p) => p,
            None => {
                if chunk.index != 0 {
                    return Err(ChunkError::OutOfOrder {
                        output_id: id.clone(),
                        expected: 0,
                        got: chunk.index,
                    });
                }
                self.partial.entry(id.clone()).or_insert(Partial {
                    out: Output {
                        output_id: id.clone(),
                        media_type: None,
                        encoding: chunk.encoding,
                        data: String::new(),
                        chunk_starts: Vec::new(),
                    },
                    next: 0,
                })
            }
        };
        let err = if chunk.index != partial.next {
            Some(ChunkError::OutOfOrder {
                output_id: id.clone(),
                expected: partial.next,
                got: chunk.index,
            })
        } else if chunk.encoding != partial.out.encoding {
            Some(ChunkError::EncodingChanged {
                output_id: id.clone(),
                index: chunk.index,
            })
        } else if partial.out.data.len() + chunk.data.len() > self.max_output_bytes {
            Some(ChunkError::TooLarge {
                output_id: id.clone(),
                max: self.max_output_bytes,
            })
        } else {
            None
        };
        if let Some(e) = err {
            self.partial.remove(id);
            return Err(e);
        }
        partial.out.chunk_starts.push(partial.out.data.len());
        partial.out.data.push_str(&chunk.data);
        if partial.out.media_type.is_none() {
            partial.out.media_type.clone_from(&chunk.media_type);
        }
        partial.next += 1;
        if chunk.last {
            return Ok(self.partial.remove(id).map(|p| p.out));
        }
        Ok(None)
    }
}
