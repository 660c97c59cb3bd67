//! The RSR directory-layout reader on arbitrary file contents: `<root>/<teacher>/<name>_gen<N>.json[l]`.
//! The first byte picks the layout (file extension, a second teacher, an odd file name); the rest is split
//! between the files.
#![no_main]

mod common;

use lark::io::{read_pool, PoolFormat, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&knobs, body)) = data.split_first() else { return };
    let root = common::scratch("rsr");
    let ext = if knobs & 1 == 0 { "json" } else { "jsonl" };
    let (first, second) = if knobs & 2 != 0 { body.split_at(body.len() / 2) } else { (body, &[][..]) };
    common::write(&root.join("alpha").join(format!("data_gen1.{ext}")), first);
    if knobs & 2 != 0 {
        common::write(&root.join("beta").join(format!("data_gen2.{ext}")), second);
    }
    if knobs & 4 != 0 {
        common::write(&root.join("alpha").join("notes.json"), b"[]");
    }
    for skip_invalid in [false, true] {
        let Ok(pool) = read_pool(&root, &ReadOptions { format: PoolFormat::RsrDir, skip_invalid }) else { continue };
        assert!(!pool.records.is_empty());
        for r in &pool.records {
            // Candidate ids number the files: teachers by name, then rollout.
            assert!(r.candidate_id == 0 || r.candidate_id == 1, "candidate id {}", r.candidate_id);
            assert_eq!(r.teacher, if r.candidate_id == 0 { "alpha" } else { "beta" });
            assert_eq!(r.messages.last().map(|m| m.role.as_str()), Some("assistant"));
        }
    }
});
