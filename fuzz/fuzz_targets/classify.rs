//! `classify` on arbitrary bytes: never panics, and a decided verdict never changes when more
//! bytes are appended (the property detection relies on to stop peeking).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidewire::detect::{classify, Verdict};

fuzz_target!(|data: &[u8]| {
    let full = classify(data);
    if let Verdict::NeedMore { want } = full {
        assert!(want > data.len(), "need-more must ask for more bytes");
        return;
    }
    // Every prefix is either undecided or already the final verdict.
    for k in (1..data.len()).step_by(1 + data.len() / 64) {
        match classify(&data[..k]) {
            Verdict::NeedMore { want } => assert!(want > k),
            v => assert_eq!(v, full, "verdict at prefix {k} differs from the full input"),
        }
    }
});
