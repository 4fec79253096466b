//! Line framing on arbitrary bytes in arbitrary reads. Input: one byte for
//! `max_line` (1..=64), then the read sizes and stream of `reads_from`.
//! Checked: the reads never change the items; the items are the model's
//! (`expected_lines`); frames fit the limit and hold no `\n`; and a decoder
//! resumed after EOF behaves like a fresh one.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use switchboard::{FrameDecoder, Framing, Inbound};
use switchboard_fuzz::{decode_reads, expected_lines, reads_from};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max_line = 1 + usize::from(limit % 64);
    let framing = Framing::Lines { max_line };
    let (reads, stream) = reads_from(rest);

    let chunked = decode_reads(framing, &reads);
    let whole = decode_reads(framing, &[stream]);
    assert_eq!(chunked, whole, "the reads changed the items");
    assert_eq!(whole, expected_lines(stream, max_line));

    let terminated = stream.iter().filter(|&&b| b == b'\n').count();
    assert!(chunked.len() == terminated || chunked.len() == terminated + 1);
    for item in &chunked {
        if let Inbound::Frame(frame) = item {
            assert!(frame.len() <= max_line, "frame over the limit");
            assert!(!frame.contains(&b'\n'), "frame holds a newline");
        }
    }

    // A reader resumed after EOF (FramedRead allows it): once `decode_eof`
    // has returned `None`, the decoder takes new bytes as a fresh one would.
    let (before, after) = stream.split_at(reads[0].len());
    let mut decoder = FrameDecoder::new(framing);
    let mut buf = BytesMut::from(before);
    while decoder.decode(&mut buf).expect("no error").is_some() {}
    while decoder.decode_eof(&mut buf).expect("no error").is_some() {}
    buf.extend_from_slice(after);
    let mut resumed = Vec::new();
    while let Some(item) = decoder.decode(&mut buf).expect("no error") {
        resumed.push(item);
    }
    while let Some(item) = decoder.decode_eof(&mut buf).expect("no error") {
        resumed.push(item);
    }
    assert_eq!(
        resumed,
        decode_reads(framing, &[after]),
        "resuming after EOF"
    );
});
