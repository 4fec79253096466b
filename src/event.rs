//! Typed events and the wire formats they are rendered in.
//!
//! Whatever reaches a session from outside its own thread — a room's
//! broadcast, a private message, an embedding program's game tick — travels as
//! an [`Event`], not as bytes: each member receives it in its own [`Wire`]
//! format, so a JSON client never reads a text line. A [`SharedEvent`] renders
//! an event at most once per wire format, however many members (on however
//! many threads) receive it, and every member speaking that format shares the
//! same bytes.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// The wire format a session speaks: how events are rendered for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wire {
    /// Lines of text ending in `\n` (SPEC §3), or any byte format of the
    /// application's own.
    #[default]
    Text,
    /// One JSON object per line (SPEC §5).
    Json,
}

impl Wire {
    /// Every wire format, in a fixed order.
    pub const ALL: [Wire; 2] = [Wire::Text, Wire::Json];

    /// The format's name: `text` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::Text => "text",
            Wire::Json => "json",
        }
    }

    fn index(self) -> usize {
        match self {
            Wire::Text => 0,
            Wire::Json => 1,
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a session is sent: rendered per [`Wire`] by the receiving side.
///
/// Implement it for an application's own events (a game's `RESULT`), so that
/// text and JSON members each read it in their own format.
///
/// # Panics
/// `render` must not panic; it runs on whichever session thread first needs
/// the format.
pub trait Event: Any + fmt::Debug + Send + Sync {
    /// The bytes of this event in `wire`, terminator included (e.g. `\n`).
    fn render(&self, wire: Wire) -> Bytes;
}

/// Bytes sent as they are, whatever the member's wire format: for programs
/// whose every client speaks one byte format of their own (an echo, a binary
/// game protocol). A lobby with JSON members should send a typed [`Event`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame(pub Bytes);

impl Event for RawFrame {
    fn render(&self, _: Wire) -> Bytes {
        self.0.clone()
    }
}

/// An [`Event`] shared by every receiver, rendered at most once per wire
/// format. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct SharedEvent(Arc<Rendered<dyn Event>>);

/// The event and its renderings in one allocation.
struct Rendered<E: ?Sized> {
    /// One slot per [`Wire`]: the first receiver speaking a format renders
    /// it, every later one (on any thread) clones the bytes.
    bytes: [OnceLock<Bytes>; 2],
    event: E,
}

impl SharedEvent {
    /// Shares `event`; nothing is rendered until a receiver asks.
    pub fn new(event: impl Event) -> Self {
        SharedEvent(Arc::new(Rendered {
            bytes: [OnceLock::new(), OnceLock::new()],
            event,
        }))
    }

    /// The event as its own type, if it is an `E`: for a protocol that
    /// reacts to what its room sends (see [`crate::Protocol::deliver`]).
    pub fn downcast_ref<E: Event>(&self) -> Option<&E> {
        let event: &dyn Any = &self.original().0.event;
        event.downcast_ref()
    }

    /// The event this one is a thread's copy of (see `for_thread`), or this
    /// one.
    fn original(&self) -> &SharedEvent {
        let event: &dyn Any = &self.0.event;
        match event.downcast_ref::<ThreadCopy>() {
            Some(ThreadCopy(original)) => original,
            None => self,
        }
    }

    /// The same event for the receivers on one thread: its renderings are
    /// copied (once per wire format) into allocations of that thread's own,
    /// so the reference counts that every receiver bumps are not shared with
    /// the receivers on other threads. A cache line bouncing between cores
    /// on every delivery costs far more than one copy per thread (`perf` on
    /// `fanout`: reference counts were a tenth of the server's CPU).
    pub(crate) fn for_thread(&self) -> SharedEvent {
        SharedEvent::new(ThreadCopy(self.original().clone()))
    }

    /// The event's bytes in `wire`, rendered on first use.
    pub fn bytes(&self, wire: Wire) -> Bytes {
        self.0.bytes[wire.index()]
            .get_or_init(|| self.0.event.render(wire))
            .clone()
    }

    /// How many bytes the event is in `wire` (rendering it once, if no one
    /// has yet).
    pub(crate) fn len_in(&self, wire: Wire) -> usize {
        self.0.bytes[wire.index()]
            .get_or_init(|| self.0.event.render(wire))
            .len()
    }

    /// The event itself, e.g. for logging.
    pub fn event(&self) -> &dyn Event {
        &self.original().0.event
    }
}

/// A thread's copy of a shared event: see [`SharedEvent::for_thread`].
#[derive(Debug)]
struct ThreadCopy(SharedEvent);

impl Event for ThreadCopy {
    fn render(&self, wire: Wire) -> Bytes {
        Bytes::copy_from_slice(&self.0.bytes(wire))
    }
}

impl fmt::Debug for SharedEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.original().0.event.fmt(f)
    }
}

impl<E: Event> From<E> for SharedEvent {
    fn from(event: E) -> Self {
        SharedEvent::new(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Counted(Arc<AtomicUsize>);

    impl Event for Counted {
        fn render(&self, wire: Wire) -> Bytes {
            self.0.fetch_add(1, Ordering::Relaxed);
            Bytes::from(format!("{wire:?}\n"))
        }
    }

    #[test]
    fn a_shared_event_is_its_own_type_again() {
        let raw = SharedEvent::new(RawFrame(Bytes::from_static(b"x")));
        assert_eq!(
            raw.downcast_ref::<RawFrame>(),
            Some(&RawFrame(Bytes::from_static(b"x")))
        );
        assert!(raw.downcast_ref::<Counted>().is_none());
    }

    #[test]
    fn a_threads_copy_is_the_same_event_in_bytes_of_its_own() {
        let renders = Arc::new(AtomicUsize::new(0));
        let event = SharedEvent::new(Counted(renders.clone()));
        let (one, other) = (event.for_thread(), event.for_thread().for_thread());
        for copy in [&one, &other] {
            assert!(copy.downcast_ref::<Counted>().is_some());
            assert_eq!(copy.bytes(Wire::Json), event.bytes(Wire::Json));
            assert_ne!(
                copy.bytes(Wire::Json).as_ptr(),
                event.bytes(Wire::Json).as_ptr(),
                "a copy of its own"
            );
            assert_eq!(format!("{copy:?}"), format!("{event:?}"));
        }
        assert_eq!(renders.load(Ordering::Relaxed), 1, "rendered once in all");
    }

    #[test]
    fn each_wire_format_is_rendered_once_and_shared() {
        let renders = Arc::new(AtomicUsize::new(0));
        let event = SharedEvent::new(Counted(renders.clone()));
        let copies: Vec<SharedEvent> = (0..10).map(|_| event.clone()).collect();
        for copy in &copies {
            assert_eq!(copy.bytes(Wire::Text), "Text\n");
            assert_eq!(copy.bytes(Wire::Json), "Json\n");
        }
        assert_eq!(renders.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_raw_frame_is_the_same_bytes_in_every_format() {
        let raw = SharedEvent::new(RawFrame(Bytes::from_static(b"tick\n")));
        assert_eq!(raw.bytes(Wire::Text), raw.bytes(Wire::Json));
    }
}
