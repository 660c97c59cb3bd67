//! Output files, every one written atomically ([`atomic`]): `scores.jsonl` and the authors' `scores.json`
//! ([`scores`]), `selection.jsonl` and `train.jsonl` ([`selection`]), `rejects.jsonl` ([`rejects`]).
//! Non-finite numbers are written as JSON `null` everywhere, so every file is valid JSON.

pub mod atomic;
pub mod jsonl;
pub mod rejects;
pub mod scores;
pub mod selection;

pub use atomic::{write_atomic, write_jsonl, AtomicFile};
pub use rejects::write_rejects_jsonl;
pub use scores::{read_scores_jsonl, write_scores_json, write_scores_jsonl};
pub use selection::{
    read_selection_jsonl, selected_records, train_lines, write_selection, write_selection_jsonl, write_train_jsonl,
};
