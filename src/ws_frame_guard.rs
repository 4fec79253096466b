//! Refuses an over-long WebSocket frame as soon as its header arrives.
//!
//! actix-ws buffers everything the socket delivers and checks a frame's
//! length only once the whole frame is in, so one header declaring a
//! gigabyte made the server buffer whatever the peer streamed after it.
//! [`FrameGuard`] sits between the connection's payload and actix-ws, reads
//! each frame header (RFC 6455 §5.2) as it passes, and ends the stream with
//! [`PayloadError::Overflow`] when a frame declares more than the limit.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_http::error::PayloadError;
use bytes::Bytes;
use futures::Stream;

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// A payload stream that fails once a frame declares more than `max` bytes.
pub(crate) struct FrameGuard<S> {
    inner: S,
    max: u64,
    /// The header being read, `have` bytes of it so far.
    header: [u8; MAX_HEADER],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    remaining: u64,
    failed: bool,
}

impl<S> FrameGuard<S> {
    pub(crate) fn new(inner: S, max: usize) -> Self {
        FrameGuard {
            inner,
            max: max as u64,
            header: [0; MAX_HEADER],
            have: 0,
            remaining: 0,
            failed: false,
        }
    }

    /// Follows the frames in `bytes`; `false` once one is over the limit.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len() as u64);
                self.remaining -= skip;
                bytes = &bytes[skip as usize..];
                continue;
            }
            self.header[self.have] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(length) = declared_length(&self.header[..self.have]) {
                if length > self.max {
                    return false;
                }
                self.remaining = length;
                self.have = 0;
            }
        }
        true
    }
}

/// The payload length a complete frame header declares; `None` while the
/// header is incomplete.
fn declared_length(header: &[u8]) -> Option<u64> {
    let [_, second, rest @ ..] = header else {
        return None;
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    let (extended, length) = match second & 0x7f {
        126 => (
            2,
            rest.get(..2)
                .map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        ),
        127 => (
            8,
            rest.get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes),
        ),
        short => (0, Some(u64::from(short))),
    };
    (rest.len() == extended + mask).then_some(length).flatten()
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let item = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        if let Some(Ok(bytes)) = &item
            && !self.scan(bytes)
        {
            self.failed = true;
            return Poll::Ready(Some(Err(PayloadError::Overflow)));
        }
        Poll::Ready(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(max: usize) -> FrameGuard<futures::stream::Empty<Result<Bytes, PayloadError>>> {
        FrameGuard::new(futures::stream::empty(), max)
    }

    /// A masked client frame header declaring `length`.
    fn header(length: u64) -> Vec<u8> {
        let mut header = vec![0x81];
        match length {
            0..=125 => header.push(0x80 | length as u8),
            126..=0xffff => {
                header.push(0x80 | 126);
                header.extend((length as u16).to_be_bytes());
            }
            _ => {
                header.push(0x80 | 127);
                header.extend(length.to_be_bytes());
            }
        }
        header.extend([1, 2, 3, 4]);
        header
    }

    #[test]
    fn frames_within_the_limit_pass_however_they_are_split() {
        let mut stream = Vec::new();
        for length in [0, 5, 125, 126, 1000] {
            stream.extend(header(length));
            stream.extend(std::iter::repeat_n(b'x', length as usize));
        }
        for chunk in [1, 3, 7, 64, stream.len()] {
            let mut guard = guard(1000);
            assert!(
                stream.chunks(chunk).all(|part| guard.scan(part)),
                "chunks of {chunk}"
            );
            assert_eq!((guard.have, guard.remaining), (0, 0));
        }
    }

    #[test]
    fn a_header_declaring_too_much_fails_before_its_payload() {
        for length in [1001, 70_000, 1 << 30, u64::MAX] {
            let mut guard = guard(1000);
            let header = header(length);
            let (start, end) = header.split_at(header.len() - 1);
            assert!(guard.scan(start), "incomplete header of {length}");
            assert!(!guard.scan(end), "{length} declared");
        }
    }
}
