//! The frames a session owes its peer, oldest first: what its protocol wrote
//! and what the rest of the server sent it, waiting for the socket.

use std::collections::VecDeque;
use std::io::{self, IoSlice};

use bytes::{Buf, Bytes};
use tokio::net::tcp::OwnedWriteHalf;

/// The largest number of queued frames handed to one vectored write.
const MAX_FRAMES_PER_WRITE: usize = 64;

/// Frames waiting for the socket, oldest first; the front one may be partly
/// written.
#[derive(Default)]
pub(crate) struct Outbound {
    frames: VecDeque<Bytes>,
    /// The bytes of `frames` not written yet.
    bytes: usize,
}

impl Outbound {
    pub(crate) fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.bytes += frame.len();
            self.frames.push_back(frame);
        }
    }

    /// Frames queued and not wholly written yet.
    pub(crate) fn len(&self) -> usize {
        self.frames.len()
    }

    /// Bytes queued and not written yet.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether more than `frames` frames or `bytes` bytes are waiting: the
    /// bound of a slow consumer.
    pub(crate) fn exceeds(&self, frames: usize, bytes: usize) -> bool {
        self.frames.len() > frames || self.bytes > bytes
    }

    /// The oldest frame.
    pub(crate) fn front(&self) -> Option<&Bytes> {
        self.frames.front()
    }

    /// The frames, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Bytes> {
        self.frames.iter()
    }

    /// Drops the oldest frame, once a transport has written all of it.
    pub(crate) fn pop_front(&mut self) {
        if let Some(front) = self.frames.pop_front() {
            self.bytes = self.bytes.saturating_sub(front.len());
        }
        if self.frames.is_empty() {
            // An emptied queue gives its memory back: idle sessions hold none.
            self.frames = VecDeque::new();
        }
    }

    /// Takes every frame, e.g. to send each as a datagram.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Bytes> + '_ {
        self.bytes = 0;
        self.frames.drain(..)
    }

    /// Writes queued frames with vectored writes until the queue is empty
    /// (`Ok`) or the socket would block (`Err` of kind `WouldBlock`).
    pub(crate) fn write_now(&mut self, writer: &OwnedWriteHalf) -> io::Result<()> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_FRAMES_PER_WRITE];
            let count = slices
                .iter_mut()
                .zip(&self.frames)
                .map(|(slice, frame)| *slice = IoSlice::new(frame))
                .count();
            let written = writer.try_write_vectored(&slices[..count])?;
            if written == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.consume(written);
        }
        // An emptied queue gives its memory back: idle sessions hold none.
        self.frames = VecDeque::new();
        Ok(())
    }

    /// Drops `written` bytes from the front of the queue.
    fn consume(&mut self, mut written: usize) {
        self.bytes = self.bytes.saturating_sub(written);
        while let Some(front) = self.frames.front_mut() {
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_consumes_partly_written_frames() {
        let mut outbound = Outbound::default();
        for frame in ["ab", "", "cde"] {
            outbound.push(Bytes::from(frame));
        }
        assert_eq!(outbound.len(), 2, "empty frames are never queued");
        assert_eq!(outbound.bytes(), 5);
        outbound.consume(3);
        assert_eq!(outbound.bytes(), 2);
        assert!(outbound.exceeds(0, 5) && outbound.exceeds(1, 1) && !outbound.exceeds(1, 2));
        assert_eq!(outbound.frames.front().map(|f| &f[..]), Some(&b"de"[..]));
        outbound.consume(2);
        assert_eq!(outbound.len(), 0);
    }
}
