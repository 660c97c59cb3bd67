//! Status codes, the thread-local last-error message, and the guard every entry point runs its body in:
//! it turns a `LarkError` or a panic into a status code and a message, so nothing unwinds into C.

use crate::error::LarkError;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub const LARK_OK: c_int = 0;
/// A required pointer argument was NULL.
pub const LARK_ERR_NULL_ARG: c_int = 1;
/// An argument is out of range (a size, an enum value, a string that is not UTF-8).
pub const LARK_ERR_INVALID_ARG: c_int = 2;
/// A caller buffer is too small; the message says how large it must be.
pub const LARK_ERR_BUFFER_TOO_SMALL: c_int = 3;
/// Bad input data: a model directory, a JSON chat, a file that cannot be read.
pub const LARK_ERR_INPUT: c_int = 4;
/// Something the engine does not support (an architecture, a template, a device).
pub const LARK_ERR_UNSUPPORTED: c_int = 5;
/// The backend (CPU or CUDA) failed or is unavailable.
pub const LARK_ERR_BACKEND: c_int = 6;
/// An internal error (a bug): a panic was caught at the boundary.
pub const LARK_ERR_PANIC: c_int = 7;
/// A job stopped before it finished because its progress callback asked it to (`lark_score_pool`).
pub const LARK_ERR_INTERRUPTED: c_int = 8;

/// An error on its way to C: a status code and the message `lark_last_error` will return.
#[derive(Debug)]
pub struct FfiError {
    pub code: c_int,
    pub message: String,
}

impl FfiError {
    pub fn new(code: c_int, message: impl Into<String>) -> Self {
        FfiError { code, message: message.into() }
    }
    pub fn null(arg: &str) -> Self {
        Self::new(LARK_ERR_NULL_ARG, format!("{arg} is NULL"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(LARK_ERR_INVALID_ARG, message)
    }
}

impl From<LarkError> for FfiError {
    fn from(e: LarkError) -> Self {
        let code = match &e {
            LarkError::Io { .. } | LarkError::Input { .. } => LARK_ERR_INPUT,
            LarkError::Unsupported(_) => LARK_ERR_UNSUPPORTED,
            LarkError::Backend(_) | LarkError::OutOfMemory { .. } => LARK_ERR_BACKEND,
            LarkError::Other(_) => LARK_ERR_INPUT,
            LarkError::Interrupted { .. } => LARK_ERR_INTERRUPTED,
        };
        FfiError::new(code, e.to_string())
    }
}

pub type FfiResult<T> = std::result::Result<T, FfiError>;

thread_local! {
    /// The message of the last failed call on this thread ("" after a successful one). `lark_last_error`
    /// hands out a pointer into it, valid until the next call on the thread replaces it.
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    // Interior NULs would truncate the C string silently; show them instead.
    let c = CString::new(message.replace('\0', "\\0")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

/// Pointer to this thread's last error message (never NULL).
pub fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    }
}

/// Run one entry point's body: LARK_OK with the message cleared, or the error's code with its message set.
/// A panic becomes LARK_ERR_PANIC; the body must leave caller memory in a documented state either way
/// (every entry point writes its outputs only after all checks and computation succeeded).
pub fn guard(name: &str, body: impl FnOnce() -> FfiResult<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            set_last_error("");
            LARK_OK
        }
        Ok(Err(e)) => {
            set_last_error(&format!("{name}: {}", e.message));
            e.code
        }
        Err(p) => {
            set_last_error(&format!("{name}: internal error (panic): {}", panic_message(p.as_ref())));
            LARK_ERR_PANIC
        }
    }
}

/// A required pointer argument, or LARK_ERR_NULL_ARG naming it.
pub fn non_null<T>(p: *const T, arg: &str) -> FfiResult<*const T> {
    if p.is_null() {
        Err(FfiError::null(arg))
    } else {
        Ok(p)
    }
}

/// A required mutable pointer argument, or LARK_ERR_NULL_ARG naming it.
pub fn non_null_mut<T>(p: *mut T, arg: &str) -> FfiResult<*mut T> {
    if p.is_null() {
        Err(FfiError::null(arg))
    } else {
        Ok(p)
    }
}

/// A NUL-terminated UTF-8 C string argument.
///
/// # Safety
/// `p` must be NULL or point to a NUL-terminated string that stays valid for `'a`.
pub unsafe fn c_str<'a>(p: *const c_char, arg: &str) -> FfiResult<&'a str> {
    let p = non_null(p, arg)?;
    std::ffi::CStr::from_ptr(p).to_str().map_err(|e| FfiError::invalid(format!("{arg} is not UTF-8: {e}")))
}
