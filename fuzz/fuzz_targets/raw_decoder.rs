//! Raw framing on arbitrary bytes in arbitrary reads: one frame per non-empty
//! read, and the frames concatenate to the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::{Framing, Inbound};
use switchboard_fuzz::{decode_reads, reads_from};

fuzz_target!(|data: &[u8]| {
    let (reads, stream) = reads_from(data);
    let items = decode_reads(Framing::Raw, &reads);
    assert_eq!(items.len(), reads.iter().filter(|r| !r.is_empty()).count());
    let mut joined = Vec::with_capacity(stream.len());
    for item in &items {
        match item {
            Inbound::Frame(frame) => {
                assert!(!frame.is_empty(), "empty raw frame");
                joined.extend_from_slice(frame);
            }
            Inbound::Oversized => panic!("raw framing has no limit"),
        }
    }
    assert_eq!(joined, stream);
});
