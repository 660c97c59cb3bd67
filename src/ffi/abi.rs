//! What the Rust side exports, described in C: every entry point's prototype (derived from its Rust type),
//! every struct's size, alignment and field offsets (`offset_of!`), and every constant. `tests/c_abi.rs`
//! compiles [`c_checks`] against `include/lark.h`, so the hand-written header cannot drift from this crate.

use super::job::lark_score_pool;
use super::model::*;
use super::status::*;
use super::types::*;
use super::weights::lark_problem_weights;
use super::{lark_last_error, lark_version};
use std::ffi::{c_char, c_int, c_void};
use std::mem::{align_of, offset_of, size_of};

/// A Rust type's C spelling.
pub trait CType {
    fn c() -> String;
}

macro_rules! c_name {
    ($($t:ty => $n:expr),* $(,)?) => {$(impl CType for $t { fn c() -> String { $n.to_string() } })*};
}
c_name! {
    c_char => "char", c_int => "int", u32 => "uint32_t", u64 => "uint64_t", usize => "size_t", f64 => "double",
    LarkModel => "lark_model", LarkOptions => "lark_options", LarkTrajectoryStats => "lark_trajectory_stats",
    LarkTokenStats => "lark_token_stats", LarkSpan => "lark_span", LarkRange => "lark_range",
    LarkProgress => "lark_progress", LarkProgressFn => "lark_progress_fn", c_void => "void",
}
impl<T: CType> CType for *const T {
    fn c() -> String {
        format!("{} const*", T::c())
    }
}
impl<T: CType> CType for *mut T {
    fn c() -> String {
        format!("{}*", T::c())
    }
}

/// A C declaration of a pointer named `name` to a function of this Rust function-pointer type.
pub trait CFnPtr {
    fn declare(name: &str) -> String;
}

macro_rules! c_fn_ptr {
    ($($a:ident),*) => {
        impl<R: CType, $($a: CType),*> CFnPtr for unsafe extern "C" fn($($a),*) -> R {
            fn declare(name: &str) -> String {
                let args: Vec<String> = vec![$($a::c()),*];
                let args = if args.is_empty() { "void".to_string() } else { args.join(", ") };
                format!("{} (*{name})({args})", R::c())
            }
        }
    };
}
c_fn_ptr!();
c_fn_ptr!(A);
c_fn_ptr!(A, B);
c_fn_ptr!(A, B, C);
c_fn_ptr!(A, B, C, D);
c_fn_ptr!(A, B, C, D, E);
c_fn_ptr!(A, B, C, D, E, F);
c_fn_ptr!(A, B, C, D, E, F, G);
c_fn_ptr!(A, B, C, D, E, F, G, H);

fn decl<F: CFnPtr>(name: &'static str, _f: F) -> (&'static str, String) {
    (name, F::declare(&format!("lark_abi_check_{name}")))
}

macro_rules! functions {
    ($($f:ident : $ty:ty),* $(,)?) => { vec![$(decl::<$ty>(stringify!($f), $f)),*] };
}

/// Every exported function: its name and a C declaration of a function pointer with its exact type.
pub fn functions() -> Vec<(&'static str, String)> {
    type P = *const c_char;
    functions![
        lark_version: unsafe extern "C" fn() -> P,
        lark_last_error: unsafe extern "C" fn() -> P,
        lark_options_default: unsafe extern "C" fn(*mut LarkOptions) -> c_int,
        lark_model_open: unsafe extern "C" fn(P, P, *const LarkOptions, *mut *mut LarkModel) -> c_int,
        lark_model_free: unsafe extern "C" fn(*mut LarkModel) -> c_int,
        lark_model_device: unsafe extern "C" fn(*const LarkModel, *mut P) -> c_int,
        lark_tokenize_chat: unsafe extern "C" fn(*const LarkModel, P, *mut u32, usize, *mut LarkSpan) -> c_int,
        lark_tokenize_chat_turns: unsafe extern "C" fn(
            *const LarkModel,
            P,
            *mut u32,
            usize,
            *mut LarkSpan,
            *mut LarkRange,
            usize,
            *mut usize
        ) -> c_int,
        lark_score_chats: unsafe extern "C" fn(*const LarkModel, *const P, usize, *mut LarkTrajectoryStats) -> c_int,
        lark_score_ids: unsafe extern "C" fn(
            *const LarkModel,
            *const u32,
            usize,
            usize,
            *mut LarkTrajectoryStats,
            *mut LarkTokenStats,
            usize
        ) -> c_int,
        lark_score_pool: unsafe extern "C" fn(P, LarkProgressFn, *mut c_void) -> c_int,
        lark_problem_weights: unsafe extern "C" fn(
            *const LarkTrajectoryStats,
            usize,
            usize,
            c_int,
            f64,
            *mut f64,
            *mut f64
        ) -> c_int,
    ]
}

/// One struct as Rust lays it out.
pub struct StructLayout {
    pub c_name: &'static str,
    pub size: usize,
    pub align: usize,
    /// (field, offset) in declaration order.
    pub fields: Vec<(&'static str, usize)>,
}

macro_rules! layout {
    ($t:ty, $c:expr, [$($f:ident),* $(,)?]) => {
        StructLayout {
            c_name: $c,
            size: size_of::<$t>(),
            align: align_of::<$t>(),
            fields: vec![$((stringify!($f), offset_of!($t, $f))),*],
        }
    };
}

pub fn structs() -> Vec<StructLayout> {
    vec![
        layout!(LarkOptions, "lark_options", [max_len, span_mode, brier_topk, rank_clip, reserved]),
        layout!(
            LarkTrajectoryStats,
            "lark_trajectory_stats",
            [
                skipped,
                truncated,
                brier_topk,
                reserved,
                n_tokens,
                nll_sum,
                L,
                brier_sum,
                brier_mean,
                rho_hat,
                grape,
                inverse_loss,
                rsr,
                mean_rank_clip,
                mean_p_gold,
                wrong_conc,
                entropy_mean,
                skip_reason
            ]
        ),
        layout!(LarkTokenStats, "lark_token_stats", [logprob, sum_p2, entropy, rank, lse, topk_brier]),
        layout!(LarkSpan, "lark_span", [len, score_from, score_to, skipped, truncated]),
        layout!(LarkRange, "lark_range", [from, to]),
        layout!(
            LarkProgress,
            "lark_progress",
            [
                trajectories_done,
                trajectories_total,
                problems_done,
                problems_total,
                tokens_done,
                tokens_total,
                totals_exact,
                reserved,
                tokens_per_s,
                elapsed_s
            ]
        ),
    ]
}

/// Every `#define` constant of the header with its Rust value.
pub fn constants() -> Vec<(&'static str, i64)> {
    vec![
        ("LARK_OK", LARK_OK as i64),
        ("LARK_ERR_NULL_ARG", LARK_ERR_NULL_ARG as i64),
        ("LARK_ERR_INVALID_ARG", LARK_ERR_INVALID_ARG as i64),
        ("LARK_ERR_BUFFER_TOO_SMALL", LARK_ERR_BUFFER_TOO_SMALL as i64),
        ("LARK_ERR_INPUT", LARK_ERR_INPUT as i64),
        ("LARK_ERR_UNSUPPORTED", LARK_ERR_UNSUPPORTED as i64),
        ("LARK_ERR_BACKEND", LARK_ERR_BACKEND as i64),
        ("LARK_ERR_PANIC", LARK_ERR_PANIC as i64),
        ("LARK_ERR_INTERRUPTED", LARK_ERR_INTERRUPTED as i64),
        ("LARK_SPAN_TURN", LARK_SPAN_TURN as i64),
        ("LARK_SPAN_CONTENT", LARK_SPAN_CONTENT as i64),
        ("LARK_WEIGHT_CHI2", LARK_WEIGHT_CHI2 as i64),
        ("LARK_WEIGHT_UNIFORM", LARK_WEIGHT_UNIFORM as i64),
        ("LARK_WEIGHT_PROPORTIONAL", LARK_WEIGHT_PROPORTIONAL as i64),
        ("LARK_WEIGHT_SOFTMAX", LARK_WEIGHT_SOFTMAX as i64),
        ("LARK_SKIP_REASON_LEN", LARK_SKIP_REASON_LEN as i64),
    ]
}

/// A C translation unit that compiles (with `-Werror`) only if `lark.h` declares every function with the
/// Rust type, lays out every struct as Rust does, and defines every constant with the Rust value.
pub fn c_checks() -> String {
    let mut s = String::from("#include <stddef.h>\n#include \"lark.h\"\n\n");
    for (name, value) in constants() {
        s += &format!("_Static_assert({name} == {value}, \"{name} differs from the Rust side\");\n");
    }
    for l in structs() {
        let t = l.c_name;
        s += &format!("_Static_assert(sizeof({t}) == {}, \"sizeof({t}) differs from Rust\");\n", l.size);
        s += &format!("_Static_assert(_Alignof({t}) == {}, \"_Alignof({t}) differs from Rust\");\n", l.align);
        for (f, off) in &l.fields {
            s += &format!("_Static_assert(offsetof({t}, {f}) == {off}, \"offsetof({t}, {f}) differs from Rust\");\n");
        }
    }
    for (name, d) in functions() {
        s += &format!("{d} = {name};\n");
    }
    s
}
