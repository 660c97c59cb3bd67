//! The LARK JSONL pool reader on arbitrary bytes: never a panic, and what it accepts is well formed.
#![no_main]

mod common;

use lark::io::{read_pool, PoolFormat, ReadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("jsonl").join("pool.jsonl");
    common::write(&path, data);
    let strict = read_pool(&path, &ReadOptions { format: PoolFormat::LarkJsonl, skip_invalid: false });
    let lenient = read_pool(&path, &ReadOptions { format: PoolFormat::LarkJsonl, skip_invalid: true });
    if let Ok(pool) = &lenient {
        assert!(!pool.records.is_empty(), "an empty pool is an error");
        for (pid, recs) in pool.problems() {
            assert!(recs.iter().all(|r| r.problem_id == pid));
        }
        for r in &pool.records {
            assert_eq!(r.messages.last().map(|m| m.role.as_str()), Some("assistant"));
            assert!(r.origin.line.is_some());
            assert!(pool.get(r.problem_id, r.candidate_id).is_some());
        }
    }
    // Strict accepts exactly the pools that lenient reads without a reject, with the same records.
    match (&strict, &lenient) {
        (Ok(s), Ok(l)) => assert!(l.rejects.is_empty() && s.records == l.records),
        (Err(e), _) => {
            let e = e.to_string();
            assert!(e.contains("pool.jsonl"), "error does not name the file: {e}");
            assert!(lenient.as_ref().map_or(true, |l| !l.rejects.is_empty()));
        }
        (Ok(_), Err(e)) => panic!("strict accepted what lenient refused: {e}"),
    }
});
