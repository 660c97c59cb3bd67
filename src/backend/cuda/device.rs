//! The CUDA device: probing for the driver and cuBLAS without panicking, the context, the one stream every
//! kernel and GEMM runs on, the cuBLAS handle, the loaded kernels, and small memory helpers.
//!
//! cudarc loads libcuda / libcublas on first use and panics when they are absent, so nothing here touches a
//! cudarc safe API before [`driver_present`] / [`cublas_present`] said yes; the calls that follow are wrapped in
//! `catch_unwind` as a last resort (a driver lacking a symbol would panic too).

use super::kernels::{self, Kernels};
use crate::error::{LarkError, Result};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    sys, CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DeviceRepr, DriverError, ValidAsZeroBits,
};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Map a driver error to a backend error that says what was being done.
pub fn cu<T>(r: std::result::Result<T, DriverError>, what: &str) -> Result<T> {
    r.map_err(|e| LarkError::Backend(format!("CUDA {what}: {e}")))
}

/// Run `f`, turning a panic inside cudarc (missing library or symbol) into an error.
pub fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into());
            Err(LarkError::Backend(format!("CUDA {what}: {msg}")))
        }
    }
}

/// Whether libcuda (the driver library) can be loaded.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the candidate names and drops the handle.
    catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// Whether libcublas can be loaded.
pub fn cublas_present() -> bool {
    // SAFETY: as above.
    catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false)
}

/// What the driver says about one device, read without creating a context.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub cc: (i32, i32),
    pub total_mem: usize,
    pub sm_count: i32,
}

impl DeviceInfo {
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.cc.0, self.cc.1)
    }
    pub fn summary(&self) -> String {
        format!(
            "cuda:{} {} ({}, {} SMs, {:.1} GiB)",
            self.ordinal,
            self.name,
            self.arch(),
            self.sm_count,
            self.total_mem as f64 / (1u64 << 30) as f64
        )
    }
}

/// Driver facts for `lark doctor`: the CUDA version the driver supports and every device.
#[derive(Debug, Clone)]
pub struct DriverInfo {
    /// e.g. 13000 for CUDA 13.0.
    pub cuda_version: i32,
    pub devices: Vec<DeviceInfo>,
}

pub fn version_string(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

/// Initialise the driver and list its devices. Err when libcuda is absent or cuInit fails (no GPU, driver and
/// kernel module mismatch, ...).
pub fn driver_info() -> Result<DriverInfo> {
    if !driver_present() {
        return Err(LarkError::Backend("no CUDA driver found (libcuda.so could not be loaded)".into()));
    }
    no_panic("driver query", || {
        cu(cudarc::driver::result::init(), "cuInit")?;
        let mut v = 0i32;
        // SAFETY: writes one int.
        let r = unsafe { sys::cuDriverGetVersion(&mut v) };
        cu(r.result(), "cuDriverGetVersion")?;
        let n = cu(cudarc::driver::result::device::get_count(), "cuDeviceGetCount")?;
        let mut devices = Vec::new();
        for i in 0..n.max(0) {
            let dev = cu(cudarc::driver::result::device::get(i), "cuDeviceGet")?;
            let attr = |a: sys::CUdevice_attribute| -> Result<i32> {
                // SAFETY: dev is a valid device handle from cuDeviceGet.
                cu(unsafe { cudarc::driver::result::device::get_attribute(dev, a) }, "cuDeviceGetAttribute")
            };
            use sys::CUdevice_attribute::*;
            devices.push(DeviceInfo {
                ordinal: i as usize,
                name: cu(cudarc::driver::result::device::get_name(dev), "cuDeviceGetName")?,
                cc: (
                    attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
                    attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
                ),
                // SAFETY: as above.
                total_mem: cu(unsafe { cudarc::driver::result::device::total_mem(dev) }, "cuDeviceTotalMem")?,
                sm_count: attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
            });
        }
        Ok(DriverInfo { cuda_version: v, devices })
    })
}

/// The cuBLAS version as MAJOR.MINOR.PATCH, when the library loads.
pub fn cublas_version() -> Option<String> {
    if !cublas_present() {
        return None;
    }
    catch_unwind(|| {
        use cudarc::cublas::sys::{cublasGetProperty, libraryPropertyType};
        let mut v = [0i32; 3];
        for (i, p) in
            [libraryPropertyType::MAJOR_VERSION, libraryPropertyType::MINOR_VERSION, libraryPropertyType::PATCH_LEVEL]
                .into_iter()
                .enumerate()
        {
            // SAFETY: writes one int; needs no handle.
            unsafe { cublasGetProperty(p, &mut v[i]) };
        }
        format!("{}.{}.{}", v[0], v[1], v[2])
    })
    .ok()
}

/// Can `ordinal` run lark's kernels? Ok(one-line description) or Err(why not), without creating a context.
pub fn check_usable(ordinal: usize) -> std::result::Result<DeviceInfo, String> {
    let info = driver_info().map_err(|e| e.to_string())?;
    if info.devices.is_empty() {
        return Err("no CUDA device found (the driver reports 0 devices)".into());
    }
    let dev = info.devices.get(ordinal).cloned().ok_or_else(|| {
        format!(
            "CUDA device {ordinal} does not exist ({} device(s): 0..{})",
            info.devices.len(),
            info.devices.len() - 1
        )
    })?;
    if !cublas_present() {
        return Err("cuBLAS not found (libcublas.so.13 could not be loaded)".into());
    }
    if !kernels::COMPILED {
        return Err(format!("CUDA kernels not compiled into this binary ({})", kernels::describe()));
    }
    if !kernels::supports(dev.cc.0, dev.cc.1) {
        return Err(format!(
            "{} is {}; the embedded kernels were built for {}",
            dev.name,
            dev.arch(),
            kernels::ARCHS.join(", ")
        ));
    }
    Ok(dev)
}

/// One GPU with everything the backend launches on it. All work goes to `stream`, in order; the host waits only
/// when it copies results back.
pub struct Gpu {
    pub info: DeviceInfo,
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    pub blas: CudaBlas,
    pub kernels: Kernels,
}

impl Gpu {
    /// Probe, create the context, stream and cuBLAS handle, and load the kernels. Every failure is an error
    /// that says what is missing; nothing panics.
    pub fn open(ordinal: usize) -> Result<Self> {
        let info = check_usable(ordinal).map_err(LarkError::Backend)?;
        no_panic("device setup", || {
            let ctx = cu(CudaContext::new(ordinal), "creating the context")?;
            // One stream, used in order by every launch: cudarc's per-buffer event tracking (for multi-stream
            // safety) would only add an event record per buffer per launch.
            // SAFETY: no buffer of this context is ever used on another stream.
            unsafe { ctx.disable_event_tracking() };
            let stream = cu(ctx.new_stream(), "creating a stream")?;
            let blas = CudaBlas::new(stream.clone())
                .map_err(|e| LarkError::Backend(format!("cuBLAS handle creation: {e:?}")))?;
            let kernels = Kernels::load(&ctx)?;
            kernels.check_all()?;
            super::attention::allow_dynamic_shared_memory(&kernels)?;
            Ok(Gpu { info, ctx, stream, blas, kernels })
        })
    }

    /// (free, total) device memory in bytes.
    pub fn mem_info(&self) -> Result<(usize, usize)> {
        cu(self.ctx.mem_get_info(), "cuMemGetInfo")
    }

    /// An allocation's result: the driver's out-of-memory becomes [`LarkError::OutOfMemory`] (a scoring job
    /// splits the batch and retries), anything else a backend error.
    fn alloc_result<T>(&self, r: std::result::Result<T, DriverError>, bytes: usize, what: &str) -> Result<T> {
        match r {
            Err(DriverError(sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY)) => {
                Err(LarkError::OutOfMemory { device: format!("cuda:{}", self.info.ordinal), bytes })
            }
            r => cu(r, &format!("{what} {bytes} bytes")),
        }
    }

    /// An uninitialised device buffer of `n` elements (at least one, so a pointer is always valid).
    pub fn alloc<T: DeviceRepr>(&self, n: usize) -> Result<CudaSlice<T>> {
        let bytes = n.max(1) * std::mem::size_of::<T>();
        // SAFETY: the contents are unset; every user writes before reading (the selftest poisons them).
        self.alloc_result(unsafe { self.stream.alloc::<T>(n.max(1)) }, bytes, "allocating")
    }

    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, n: usize) -> Result<CudaSlice<T>> {
        let bytes = n.max(1) * std::mem::size_of::<T>();
        self.alloc_result(self.stream.alloc_zeros::<T>(n.max(1)), bytes, "allocating zeroed")
    }

    /// A device copy of `data` (a one-element placeholder when empty).
    pub fn upload<T: DeviceRepr + Default + Clone>(&self, data: &[T]) -> Result<CudaSlice<T>> {
        if data.is_empty() {
            return self.upload(&[T::default()]);
        }
        self.alloc_result(self.stream.clone_htod(data), std::mem::size_of_val(data), "copying to the device")
    }

    /// Overwrite the start of `dst` with `data`.
    pub fn write<T: DeviceRepr>(&self, data: &[T], dst: &mut CudaSlice<T>) -> Result<()> {
        if data.len() > dst.len() {
            return Err(LarkError::Backend(format!("copy of {} elements into a buffer of {}", data.len(), dst.len())));
        }
        if data.is_empty() {
            return Ok(());
        }
        cu(self.stream.memcpy_htod(data, &mut dst.slice_mut(..data.len())), "host-to-device copy")
    }

    /// The first `n` elements of `src`, after all queued work (synchronises).
    pub fn download<T: DeviceRepr + Default + Clone>(&self, src: &CudaSlice<T>, n: usize) -> Result<Vec<T>> {
        if n > src.len() {
            return Err(LarkError::Backend(format!("download of {n} elements from a buffer of {}", src.len())));
        }
        let mut out = vec![T::default(); n];
        if n > 0 {
            cu(self.stream.memcpy_dtoh(&src.slice(..n), &mut out), "device-to-host copy")?;
        }
        self.sync()?;
        Ok(out)
    }

    /// Fill a buffer with 0xFF bytes: NaN as f32 and as bf16, -1 as int. The selftest poisons every output before
    /// a launch, so an element a kernel forgot to write shows up as NaN.
    pub fn poison<T>(&self, buf: &mut CudaSlice<T>) -> Result<()> {
        let bytes = buf.num_bytes();
        let (ptr, _rec) = buf.device_ptr_mut(&self.stream);
        // SAFETY: ptr is a live allocation of `bytes` bytes on this context.
        cu(unsafe { cudarc::driver::result::memset_d8_async(ptr, 0xFF, bytes, self.stream.cu_stream()) }, "memset")
    }

    /// Wait for all queued work; surfaces asynchronous kernel faults.
    pub fn sync(&self) -> Result<()> {
        cu(self.stream.synchronize(), "stream synchronize (an earlier kernel or copy failed)")
    }
}

/// The raw device address of a buffer, for cuBLAS and for offsets into a buffer. Valid while `s` lives; every
/// use is on the one stream, so no synchronisation is needed.
pub fn dptr<T>(s: &CudaSlice<T>, stream: &CudaStream) -> u64 {
    let (p, _rec) = s.device_ptr(stream);
    p
}
