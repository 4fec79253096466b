//! How a byte stream is cut into frames: raw chunks, bounded lines, or
//! length-prefixed frames.
//!
//! tokio-util's `LinesCodec` is close, but it reports an over-long line and
//! invalid UTF-8 as stream errors (which end a `FramedRead`), counts the `\r`
//! of `\r\n` toward the limit, and insists on UTF-8 even where a protocol wants
//! bytes. Here an over-long line is an ordinary item, so it costs that line
//! only, and text validation is left to the protocol that owns the text.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use tokio::io::AsyncRead;
use tokio_util::codec::{Decoder, FramedRead};

/// How much a raw-framed session reads at once. The classic tutorials
/// `recv(1024)`; a few KiB keeps bulk echo efficient too.
const RAW_READ_SIZE: usize = 4096;

/// The first read buffer of a line-framed session. Most lobby lines are short;
/// the buffer grows for a longer line, and a small start keeps an idle
/// session cheap.
const LINE_READ_START: usize = 128;

/// How a session cuts its inbound bytes into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Every chunk that one read returns is one frame, as in the classic socket
    /// tutorials that call `recv` and treat the result as a message.
    Raw,
    /// Newline-terminated lines (`\r\n` accepted) of at most `max_line` bytes,
    /// terminator excluded.
    Lines {
        /// The longest line accepted, in bytes, without its terminator.
        max_line: usize,
    },
    /// Frames of a 4-byte big-endian length (not counting itself) followed
    /// by that many bytes. A declared length over `max_frame` is refused
    /// before anything is allocated for it, and ends the session: the stream
    /// cannot be resynchronised after it.
    LengthPrefixed {
        /// The largest payload accepted, in bytes.
        max_frame: usize,
    },
}

impl Framing {
    /// The capacity a session's read buffer starts with.
    pub fn initial_read_capacity(self) -> usize {
        match self {
            Framing::Raw => RAW_READ_SIZE,
            Framing::Lines { .. } | Framing::LengthPrefixed { .. } => LINE_READ_START,
        }
    }

    /// `payload` as it goes on the wire in this framing: unchanged for raw
    /// chunks, with a `\n` appended for lines, behind its length for
    /// length-prefixed frames.
    ///
    /// # Panics
    /// For a length-prefixed payload of 4 GiB or more, which no length prefix
    /// can describe.
    pub fn encode(self, payload: &[u8]) -> Bytes {
        match self {
            Framing::Raw => Bytes::copy_from_slice(payload),
            Framing::Lines { .. } => [payload, b"\n"].concat().into(),
            Framing::LengthPrefixed { .. } => {
                let length = u32::try_from(payload.len()).expect("payload under 4 GiB");
                [&length.to_be_bytes()[..], payload].concat().into()
            }
        }
    }
}

/// Input that cannot be framed at all: the session it arrived on must end.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length-prefixed frame declared more bytes than the limit allows.
    #[error("a frame of {declared} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The length the peer declared.
        declared: usize,
        /// The framing's limit.
        max: usize,
    },
    /// Reading from the connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Less free room than this in the read buffer before a read, and the reader
/// makes room for a whole initial buffer.
const MIN_READ_ROOM: usize = 64;

/// A read buffer that grew past this while holding a long line is replaced
/// by a fresh small one once it is empty again.
const MAX_IDLE_READ_BUFFER: usize = 1024;

/// A stream of [`Inbound`] items read from `R` with a [`FrameDecoder`].
///
/// Unlike a bare `FramedRead`, it gives memory back: a read buffer keeps its
/// high-water size, so after one long line a session would hold a
/// multi-kilobyte buffer for good. Once the buffer is empty it is swapped for
/// a small one.
pub struct FrameReader<R> {
    frames: FramedRead<R, FrameDecoder>,
    initial_capacity: usize,
}

impl<R: AsyncRead> FrameReader<R> {
    /// Reads frames of `framing` from `reader`.
    pub fn new(reader: R, framing: Framing) -> Self {
        let initial_capacity = framing.initial_read_capacity();
        FrameReader {
            frames: FramedRead::with_capacity(reader, FrameDecoder::new(framing), initial_capacity),
            initial_capacity,
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for FrameReader<R> {
    type Item = Result<Inbound, FrameError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let initial_capacity = self.initial_capacity;
        let buffer = self.frames.read_buffer_mut();
        if buffer.capacity() - buffer.len() < MIN_READ_ROOM {
            // Frames split off the buffer still share its allocation, and the
            // framed reader only reserves one byte when it is full: without
            // room made here, half the reads would fetch a single byte.
            buffer.reserve(initial_capacity);
        }
        let item = ready!(Pin::new(&mut self.frames).poll_next(cx));
        let limit = MAX_IDLE_READ_BUFFER.max(self.initial_capacity);
        if self.frames.read_buffer().is_empty() && self.frames.decoder().peak_capacity > limit {
            *self.frames.read_buffer_mut() = BytesMut::with_capacity(self.initial_capacity);
            self.frames.decoder_mut().peak_capacity = 0;
        }
        Poll::Ready(item)
    }
}

/// One decoded unit of inbound traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A complete frame: a raw chunk, or a line without its terminator.
    Frame(Bytes),
    /// A line longer than the limit. It is reported once, as soon as it is
    /// known to be too long, and its remaining bytes up to the next newline are
    /// discarded without being buffered.
    Oversized,
}

/// A [`Decoder`] for a [`Framing`].
#[derive(Debug)]
pub struct FrameDecoder {
    framing: Framing,
    /// Bytes of the buffer already searched for a newline, so a line that
    /// arrives in many small reads is scanned once, not once per read.
    scanned: usize,
    /// True while skipping the rest of an over-long line.
    discarding: bool,
    /// The largest buffer seen since the reader last reset it: after a split
    /// the buffer only shows what is left of its allocation, so the decoder,
    /// which sees it whole, remembers how big it got.
    peak_capacity: usize,
}

impl FrameDecoder {
    /// A decoder for `framing`.
    pub fn new(framing: Framing) -> Self {
        FrameDecoder {
            framing,
            scanned: 0,
            discarding: false,
            peak_capacity: 0,
        }
    }

    fn decode_line(&mut self, buf: &mut BytesMut, max_line: usize) -> Option<Inbound> {
        loop {
            let Some(offset) = buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                if self.discarding {
                    buf.clear();
                    self.scanned = 0;
                    return None;
                }
                // A line of exactly `max_line` bytes may still be waiting for
                // the `\n` of its `\r\n`, so one `\r` past the limit is allowed.
                let pending_cr = buf.last() == Some(&b'\r');
                let longest_possible_line = buf.len() - usize::from(pending_cr);
                if longest_possible_line > max_line {
                    buf.clear();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Inbound::Oversized);
                }
                self.scanned = buf.len();
                return None;
            };
            let newline = self.scanned + offset;
            self.scanned = 0;
            if self.discarding {
                buf.advance(newline + 1);
                self.discarding = false;
                continue;
            }
            let mut line = buf.split_to(newline + 1);
            line.truncate(newline);
            if line.last() == Some(&b'\r') {
                line.truncate(newline - 1);
            }
            if line.len() > max_line {
                return Some(Inbound::Oversized);
            }
            return Some(Inbound::Frame(line.freeze()));
        }
    }
}

/// The length of a length-prefixed frame's prefix.
const LENGTH_PREFIX: usize = 4;

fn decode_length_prefixed(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
        return Ok(None);
    };
    let declared = u32::from_be_bytes(*prefix) as usize;
    if declared > max {
        return Err(FrameError::TooLarge { declared, max });
    }
    let whole = LENGTH_PREFIX + declared;
    if buf.len() < whole {
        // Checked against the limit above, so this reserve is bounded.
        buf.reserve(whole - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX);
    Ok(Some(Inbound::Frame(buf.split_to(declared).freeze())))
}

impl Decoder for FrameDecoder {
    type Item = Inbound;
    type Error = FrameError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, Self::Error> {
        self.peak_capacity = self.peak_capacity.max(buf.capacity());
        Ok(match self.framing {
            Framing::Raw if buf.is_empty() => None,
            Framing::Raw => Some(Inbound::Frame(buf.split().freeze())),
            Framing::Lines { max_line } => self.decode_line(buf, max_line),
            Framing::LengthPrefixed { max_frame } => decode_length_prefixed(buf, max_frame)?,
        })
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Inbound>, Self::Error> {
        let frame = self.decode(buf)?;
        if frame.is_none() {
            // A partial line at end of input was never sent in full: drop it,
            // and start afresh should the reader be polled again.
            buf.clear();
            self.scanned = 0;
            self.discarding = false;
        }
        Ok(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, reads: &[&[u8]]) -> Vec<Inbound> {
        let mut decoder = FrameDecoder::new(framing);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for read in reads {
            buf.extend_from_slice(read);
            while let Some(item) = decoder.decode(&mut buf).expect("decoding never fails") {
                out.push(item);
            }
        }
        while let Some(item) = decoder.decode_eof(&mut buf).expect("decoding never fails") {
            out.push(item);
        }
        out
    }

    fn frame(text: &str) -> Inbound {
        Inbound::Frame(Bytes::copy_from_slice(text.as_bytes()))
    }

    #[test]
    fn lines_accept_crlf_and_drop_partial_line_at_eof() {
        let lines = Framing::Lines { max_line: 16 };
        assert_eq!(
            decode_all(lines, &[b"one\r\ntw", b"o\n\nthree"]),
            vec![frame("one"), frame("two"), frame("")]
        );
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_accepted_with_either_terminator() {
        let lines = Framing::Lines { max_line: 4 };
        assert_eq!(decode_all(lines, &[b"abcd\n"]), vec![frame("abcd")]);
        assert_eq!(decode_all(lines, &[b"abcd\r", b"\n"]), vec![frame("abcd")]);
        assert_eq!(decode_all(lines, &[b"abcde\n"]), vec![Inbound::Oversized]);
    }

    #[test]
    fn an_over_long_line_is_reported_once_however_it_is_split() {
        let lines = Framing::Lines { max_line: 4 };
        let reads: [&[u8]; 5] = [b"ab", b"cdef", b"ghij", b"kl\nok", b"\n"];
        assert_eq!(
            decode_all(lines, &reads),
            vec![Inbound::Oversized, frame("ok")]
        );
        let one_read = decode_all(lines, &[b"abcdefghijkl\nok\n"]);
        assert_eq!(one_read, vec![Inbound::Oversized, frame("ok")]);
    }

    /// Hands out one queued chunk per read and records how much room each
    /// read was offered.
    struct ChunkedReader {
        chunks: std::collections::VecDeque<Vec<u8>>,
        offered: Vec<usize>,
    }

    impl AsyncRead for ChunkedReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.offered.push(buf.remaining());
            if let Some(mut chunk) = self.chunks.pop_front() {
                let rest = chunk.split_off(chunk.len().min(buf.remaining()));
                buf.put_slice(&chunk);
                if !rest.is_empty() {
                    self.chunks.push_front(rest);
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn every_read_is_offered_real_room_while_frames_are_held() {
        for framing in [Framing::Raw, Framing::Lines { max_line: 64 }] {
            let chunks = (0..50).map(|i| format!("line number {i:04}\n").into_bytes());
            let reader = ChunkedReader {
                chunks: chunks.collect(),
                offered: Vec::new(),
            };
            let mut frames = FrameReader::new(reader, framing);
            // Holding every frame keeps the buffer's allocations shared.
            let held: Vec<Inbound> = futures::executor::block_on_stream(&mut frames)
                .map(|item| item.expect("in-memory reads never fail"))
                .collect();
            assert_eq!(held.len(), 50, "{framing:?}");
            let offered = &frames.frames.get_ref().offered;
            let smallest = offered.iter().min().copied().unwrap_or(0);
            assert!(
                smallest >= MIN_READ_ROOM,
                "{framing:?}: a read was offered {smallest} bytes"
            );
        }
    }

    #[test]
    fn length_prefixed_frames_split_or_packed_round_trip() {
        let framing = Framing::LengthPrefixed { max_frame: 16 };
        let wire: Vec<u8> = [&b"hello"[..], b"", b"world!"]
            .iter()
            .flat_map(|payload| framing.encode(payload).to_vec())
            .collect();
        let expected = vec![frame("hello"), frame(""), frame("world!")];
        assert_eq!(decode_all(framing, &[&wire]), expected);
        let byte_by_byte: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(decode_all(framing, &byte_by_byte), expected);
        let partial_at_eof = &wire[..wire.len() - 1];
        assert_eq!(decode_all(framing, &[partial_at_eof]), expected[..2]);
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let mut decoder = FrameDecoder::new(Framing::LengthPrefixed { max_frame: 16 });
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let error = decoder.decode(&mut buf).expect_err("over the limit");
        assert!(
            matches!(error, FrameError::TooLarge { declared, max: 16 } if declared == u32::MAX as usize)
        );
        assert!(buf.capacity() < 64, "nothing was reserved for the frame");
    }

    #[test]
    fn raw_frames_are_whole_reads() {
        assert_eq!(
            decode_all(Framing::Raw, &[b"hello", b"world\n"]),
            vec![frame("hello"), frame("world\n")]
        );
    }
}
