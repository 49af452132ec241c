//! VST3 shell (`vst3` crate bindings): one single-component class (processor and edit controller
//! in one object, as the SDK's `SingleComponentEffect`), its factory and the module exports.
//! Every entry point is guarded with `catch_unwind`: the `vst3` crate does not catch panics and a
//! panic must never unwind into the host.
//!
//! Threading, per the VST3 rules: `setupProcessing`, `setActive`, `setState` and the controller
//! calls come from the main thread; `process` from the audio thread, never concurrently with
//! `setActive`/`setupProcessing`. The engine therefore lives in an `UnsafeCell` touched only by
//! `setActive` (main thread, not processing) and `process`/`setProcessing` (audio side); the rest
//! of the main-thread state is behind a `Mutex` that the audio thread never takes; parameters are
//! atomics.

#![allow(non_snake_case)]

use std::cell::UnsafeCell;
use std::ffi::{CString, c_char, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use vst3::Steinberg::Vst::*;
use vst3::Steinberg::*;
use vst3::{Class, ComPtr, ComRef, ComWrapper, uid};

use crate::dsp::{Engine, EngineConfig, MAX_CHANNELS, plan_for};
use crate::model::ModelSlot;
use crate::params::{self, Kind, PARAMS, ParamStore};
use crate::state::{self, SavedState};

fn copy_cstring(src: &str, dst: &mut [c_char]) {
    let c = CString::new(src).unwrap_or_default();
    let bytes = c.as_bytes_with_nul();
    for (s, d) in bytes.iter().zip(dst.iter_mut()) {
        *d = *s as c_char;
    }
    let len = dst.len();
    if let Some(last) = dst.last_mut()
        && bytes.len() > len
    {
        *last = 0;
    }
}

fn copy_wstring(src: &str, dst: &mut [TChar]) {
    let mut len = 0;
    for (s, d) in src.encode_utf16().zip(dst.iter_mut()) {
        *d = s as TChar;
        len += 1;
    }
    if len < dst.len() {
        dst[len] = 0;
    } else if let Some(last) = dst.last_mut() {
        *last = 0;
    }
}

/// Reads a NUL-terminated UTF-16 string of at most 128 units.
unsafe fn read_wstring(s: *const TChar) -> Option<String> {
    if s.is_null() {
        return None;
    }
    let mut v = Vec::new();
    for i in 0..128 {
        // SAFETY: the caller passes a NUL-terminated string (String128 in the API).
        let c = unsafe { *s.add(i) };
        if c == 0 {
            break;
        }
        v.push(c);
    }
    String::from_utf16(&v).ok()
}

/// Parameter points collected per block for sample-accurate automation.
const MAX_POINTS: usize = 256;

/// Runs `f`, turning a panic into `err`.
fn guard<T>(err: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(err)
}

struct Main {
    model: ModelSlot,
    sample_rate: f64,
    max_block: usize,
    handler: Option<ComPtr<IComponentHandler>>,
    active: bool,
}

pub struct Vst3Monitor {
    params: ParamStore,
    latency: AtomicU32,
    status: AtomicU32,
    channels: AtomicU32,
    offline: AtomicBool,
    engine: UnsafeCell<Option<Engine>>,
    main: Mutex<Main>,
}

// SAFETY: `engine` is only accessed under the VST3 threading rules described in the module docs
// (never from two threads at once); everything else is atomics or behind the mutex.
unsafe impl Sync for Vst3Monitor {}
unsafe impl Send for Vst3Monitor {}

impl Class for Vst3Monitor {
    type Interfaces = (
        IComponent,
        IAudioProcessor,
        IProcessContextRequirements,
        IEditController,
    );
}

impl Vst3Monitor {
    pub const CID: TUID = uid(0x46436D6F, 0x6E69746F, 0x72465643, 0x6F646563);

    pub fn new() -> Vst3Monitor {
        Vst3Monitor {
            params: ParamStore::default(),
            latency: AtomicU32::new(0),
            status: AtomicU32::new(0),
            channels: AtomicU32::new(2),
            offline: AtomicBool::new(false),
            engine: UnsafeCell::new(None),
            main: Mutex::new(Main {
                model: ModelSlot::default(),
                sample_rate: 48_000.0,
                max_block: 1024,
                handler: None,
                active: false,
            }),
        }
    }

    fn main(&self) -> std::sync::MutexGuard<'_, Main> {
        self.main.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Recomputes the latency for the current setup (loading the model if needed); tells the
    /// host if it changed since it was last reported.
    fn update_latency(&self, m: &mut Main, notify: bool) {
        let src = m.model.source();
        let plan = plan_for(m.sample_rate, m.max_block, &src);
        let old = self.latency.swap(plan.latency, Ordering::AcqRel);
        if notify
            && old != plan.latency
            && let Some(h) = &m.handler
        {
            // SAFETY: the handler pointer was given to us by the host and is ref-counted.
            unsafe { h.restartComponent(RestartFlags_::kLatencyChanged) };
        }
    }

    fn read_stream(stream: *mut IBStream) -> Option<Vec<u8>> {
        // SAFETY: the host passes a valid stream or null.
        let s = unsafe { ComRef::from_raw(stream) }?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut got = 0i32;
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let r = unsafe { s.read(buf.as_mut_ptr() as *mut c_void, buf.len() as i32, &mut got) };
            if r != kResultOk || got <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..got as usize]);
            if out.len() > 1 << 20 {
                return None;
            }
        }
        Some(out)
    }

    fn apply_state(&self, stream: *mut IBStream) -> tresult {
        let Some(bytes) = Self::read_stream(stream) else {
            return kInvalidArgument;
        };
        let Ok(s) = state::decode(&bytes) else {
            return kResultFalse;
        };
        for (id, v) in s.params {
            self.params.set_from_host(id, v);
        }
        let mut m = self.main();
        if m.model.set_choice(&s.model) {
            // The new model is used from the next activation; its timing may differ.
            let sr = m.sample_rate;
            if sr > 0.0 {
                self.update_latency(&mut m, true);
            }
            if m.active
                && let Some(h) = &m.handler
            {
                // SAFETY: host-provided, ref-counted handler.
                unsafe { h.restartComponent(RestartFlags_::kReloadComponent) };
            }
        }
        kResultOk
    }

    fn channel_count(&self) -> i32 {
        self.channels.load(Ordering::Relaxed) as i32
    }

    fn arrangement(&self) -> SpeakerArrangement {
        if self.channel_count() == 1 {
            SpeakerArr::kMono
        } else {
            SpeakerArr::kStereo
        }
    }
}

impl Default for Vst3Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl IPluginBaseTrait for Vst3Monitor {
    unsafe fn initialize(&self, _context: *mut FUnknown) -> tresult {
        kResultOk
    }
    unsafe fn terminate(&self) -> tresult {
        guard(kResultOk, || {
            // SAFETY: terminate is called on the main thread after processing stopped.
            unsafe { *self.engine.get() = None };
            self.main().handler = None;
            kResultOk
        })
    }
}

impl IComponentTrait for Vst3Monitor {
    unsafe fn getControllerClassId(&self, _class_id: *mut TUID) -> tresult {
        // Single component: the host queries IEditController on this object.
        kResultFalse
    }

    unsafe fn setIoMode(&self, _mode: IoMode) -> tresult {
        kResultOk
    }

    unsafe fn getBusCount(&self, media_type: MediaType, _dir: BusDirection) -> i32 {
        if media_type == MediaTypes_::kAudio as MediaType {
            1
        } else {
            0
        }
    }

    unsafe fn getBusInfo(
        &self,
        media_type: MediaType,
        dir: BusDirection,
        index: i32,
        bus: *mut BusInfo,
    ) -> tresult {
        guard(kInternalError, || {
            if media_type != MediaTypes_::kAudio as MediaType || index != 0 || bus.is_null() {
                return kInvalidArgument;
            }
            // SAFETY: checked non-null; the host owns the struct.
            let bus = unsafe { &mut *bus };
            bus.mediaType = MediaTypes_::kAudio as MediaType;
            bus.direction = dir;
            bus.channelCount = self.channel_count();
            let name = if dir == BusDirections_::kInput as BusDirection {
                "Input"
            } else {
                "Output"
            };
            copy_wstring(name, &mut bus.name);
            bus.busType = BusTypes_::kMain as BusType;
            bus.flags = BusInfo_::BusFlags_::kDefaultActive;
            kResultOk
        })
    }

    unsafe fn getRoutingInfo(&self, _in: *mut RoutingInfo, _out: *mut RoutingInfo) -> tresult {
        kNotImplemented
    }

    unsafe fn activateBus(
        &self,
        _media_type: MediaType,
        _dir: BusDirection,
        _index: i32,
        _state: TBool,
    ) -> tresult {
        kResultOk
    }

    unsafe fn setActive(&self, state: TBool) -> tresult {
        guard(kInternalError, || {
            let mut m = self.main();
            // SAFETY: setActive is never called while process runs (VST3 threading rules).
            let slot = unsafe { &mut *self.engine.get() };
            if state != 0 {
                let source = m.model.source();
                let engine = Engine::new(
                    &EngineConfig {
                        sample_rate: m.sample_rate,
                        max_block: m.max_block,
                        channels: self.channel_count() as usize,
                    },
                    source,
                    self.params.settings(),
                );
                let latency = engine.latency();
                if self.latency.swap(latency, Ordering::AcqRel) != latency
                    && let Some(h) = &m.handler
                {
                    // SAFETY: host-provided, ref-counted handler.
                    unsafe { h.restartComponent(RestartFlags_::kLatencyChanged) };
                }
                self.status.store(engine.status() as u32, Ordering::Relaxed);
                *slot = Some(engine);
                m.active = true;
            } else {
                *slot = None; // stops and joins the worker
                m.active = false;
            }
            kResultOk
        })
    }

    unsafe fn setState(&self, stream: *mut IBStream) -> tresult {
        guard(kInternalError, || self.apply_state(stream))
    }

    unsafe fn getState(&self, stream: *mut IBStream) -> tresult {
        guard(kInternalError, || {
            // SAFETY: host-provided stream or null.
            let Some(s) = (unsafe { ComRef::from_raw(stream) }) else {
                return kInvalidArgument;
            };
            let bytes = state::encode(&SavedState {
                params: self.params.snapshot(),
                model: self.main().model.choice().to_string(),
            });
            let mut written = 0i32;
            // SAFETY: `bytes` is valid for its length.
            let r = unsafe {
                s.write(
                    bytes.as_ptr() as *mut c_void,
                    bytes.len() as i32,
                    &mut written,
                )
            };
            if r == kResultOk && written as usize == bytes.len() {
                kResultOk
            } else {
                kResultFalse
            }
        })
    }
}

impl IAudioProcessorTrait for Vst3Monitor {
    unsafe fn setBusArrangements(
        &self,
        inputs: *mut SpeakerArrangement,
        num_ins: i32,
        outputs: *mut SpeakerArrangement,
        num_outs: i32,
    ) -> tresult {
        guard(kInternalError, || {
            if num_ins != 1 || num_outs != 1 || inputs.is_null() || outputs.is_null() {
                return kResultFalse;
            }
            // SAFETY: checked non-null, one element each.
            let (i, o) = unsafe { (*inputs, *outputs) };
            let ch = match (i, o) {
                (SpeakerArr::kStereo, SpeakerArr::kStereo) => 2,
                (SpeakerArr::kMono, SpeakerArr::kMono) => 1,
                _ => return kResultFalse,
            };
            // SAFETY: called while inactive; the engine is rebuilt at activation.
            if unsafe { (*self.engine.get()).is_some() } {
                return kResultFalse;
            }
            self.channels.store(ch, Ordering::Relaxed);
            kResultTrue
        })
    }

    unsafe fn getBusArrangement(
        &self,
        _dir: BusDirection,
        index: i32,
        arr: *mut SpeakerArrangement,
    ) -> tresult {
        if index != 0 || arr.is_null() {
            return kInvalidArgument;
        }
        // SAFETY: checked non-null.
        unsafe { *arr = self.arrangement() };
        kResultOk
    }

    unsafe fn canProcessSampleSize(&self, size: i32) -> tresult {
        if size == SymbolicSampleSizes_::kSample32 as i32 {
            kResultOk
        } else {
            kResultFalse
        }
    }

    unsafe fn getLatencySamples(&self) -> u32 {
        self.latency.load(Ordering::Acquire)
    }

    unsafe fn setupProcessing(&self, setup: *mut ProcessSetup) -> tresult {
        guard(kInternalError, || {
            if setup.is_null() {
                return kInvalidArgument;
            }
            // SAFETY: checked non-null.
            let s = unsafe { &*setup };
            if s.symbolicSampleSize != SymbolicSampleSizes_::kSample32 as i32 {
                return kResultFalse;
            }
            self.offline.store(
                s.processMode == ProcessModes_::kOffline as i32,
                Ordering::Relaxed,
            );
            let mut m = self.main();
            m.sample_rate = s.sampleRate;
            m.max_block = s.maxSamplesPerBlock.max(1) as usize;
            // Hosts read the latency right after this call, before activating.
            self.update_latency(&mut m, true);
            kResultOk
        })
    }

    unsafe fn setProcessing(&self, state: TBool) -> tresult {
        guard(kInternalError, || {
            if state != 0 {
                // SAFETY: not concurrent with process (VST3 threading rules).
                if let Some(e) = unsafe { &mut *self.engine.get() } {
                    e.reset();
                }
            }
            kResultOk
        })
    }

    unsafe fn process(&self, data: *mut ProcessData) -> tresult {
        guard(kInternalError, || {
            if data.is_null() {
                return kInvalidArgument;
            }
            // SAFETY: the host passes valid process data for the duration of the call.
            unsafe { self.process_inner(&*data) }
        })
    }

    unsafe fn getTailSamples(&self) -> u32 {
        0
    }
}

impl Vst3Monitor {
    fn apply_points(&self, points: &[(i32, u32, u32, f64)]) {
        for &(_, _, id, v) in points {
            if let Some(p) = params::spec(id) {
                self.params.set_from_host(id, p.from_normalized(v));
            }
        }
    }

    unsafe fn process_inner(&self, d: &ProcessData) -> tresult {
        let _ftz = crate::DenormalGuard::new();
        // Parameter changes, sample-accurate: every point of every queue is collected on the
        // stack (no allocation) and the block is split at their offsets. Beyond `MAX_POINTS` in
        // one block, a queue's further points are applied at its last collected point's offset.
        let mut points = [(0i32, 0u32, 0u32, 0f64); MAX_POINTS]; // (offset, order, id, normalised)
        let mut np = 0usize;
        // SAFETY: host-provided or null.
        if let Some(changes) = unsafe { ComRef::from_raw(d.inputParameterChanges) } {
            let count = unsafe { changes.getParameterCount() };
            for i in 0..count {
                let Some(q) = (unsafe { ComRef::from_raw(changes.getParameterData(i)) }) else {
                    continue;
                };
                let id = unsafe { q.getParameterId() };
                if params::spec(id).is_none() {
                    continue;
                }
                let count = unsafe { q.getPointCount() };
                for k in 0..count {
                    let (mut offset, mut value) = (0i32, 0f64);
                    if unsafe { q.getPoint(k, &mut offset, &mut value) } != kResultOk {
                        continue;
                    }
                    let slot = if np < MAX_POINTS {
                        np += 1;
                        np - 1
                    } else {
                        np - 1 // overwrite the last slot: keeps the final value
                    };
                    points[slot] = (offset.max(0), (i as u32) << 16 | k as u32, id, value);
                }
            }
        }
        let points = &mut points[..np];
        points.sort_unstable_by_key(|p| (p.0, p.1));
        let n = d.numSamples.max(0) as usize;
        // SAFETY: process never runs concurrently with setActive.
        let Some(engine) = (unsafe { &mut *self.engine.get() }) else {
            self.apply_points(points);
            return kResultOk;
        };
        if n == 0
            || d.numInputs < 1
            || d.numOutputs < 1
            || d.inputs.is_null()
            || d.outputs.is_null()
        {
            self.apply_points(points); // parameter flush, or no buses
            return kResultOk;
        }
        engine.set_offline(self.offline.load(Ordering::Relaxed));
        // SAFETY: the host provides numInputs/numOutputs valid bus descriptions.
        let (inb, outb) = unsafe { (&*d.inputs, &mut *d.outputs) };
        let ch = (inb.numChannels.min(outb.numChannels).max(0) as usize).min(MAX_CHANNELS);
        let ins = unsafe { inb.__field0.channelBuffers32 };
        let outs = unsafe { outb.__field0.channelBuffers32 };
        if ins.is_null() || outs.is_null() || ch == 0 {
            self.apply_points(points);
            return kResultOk;
        }
        let mut bufs: [&mut [f32]; MAX_CHANNELS] = [&mut [], &mut []];
        for (c, b) in bufs.iter_mut().enumerate().take(ch) {
            // SAFETY: channel pointers valid for `n` samples; input and output may alias
            // (in-place), which `ptr::copy` allows.
            unsafe {
                let (i, o) = (*ins.add(c), *outs.add(c));
                if i.is_null() || o.is_null() {
                    return kResultOk;
                }
                if i != o {
                    ptr::copy(i, o, n);
                }
                *b = std::slice::from_raw_parts_mut(o, n);
            }
        }
        let mut next = 0;
        let mut start = 0usize;
        while start < n {
            while next < points.len() && points[next].0 as usize <= start {
                let (_, _, id, v) = points[next];
                if let Some(p) = params::spec(id) {
                    self.params.set_from_host(id, p.from_normalized(v));
                }
                next += 1;
            }
            let end = points
                .get(next)
                .map_or(n, |p| (p.0 as usize).clamp(start + 1, n));
            let settings = self.params.settings();
            let mut sub: [&mut [f32]; MAX_CHANNELS] = [&mut [], &mut []];
            for (s, b) in sub.iter_mut().zip(bufs.iter_mut()).take(ch) {
                *s = &mut b[start..end];
            }
            engine.process(&mut sub[..ch], &settings);
            start = end;
        }
        // Points at or after the end of the block still apply (from the next block on).
        self.apply_points(&points[next..]);
        let mut silence = 0u64;
        for (c, b) in bufs.iter().enumerate().take(ch) {
            if b.iter().all(|v| *v == 0.0) {
                silence |= 1 << c;
            }
        }
        outb.silenceFlags = silence;
        let status = engine.status() as u32;
        if self.status.swap(status, Ordering::Relaxed) != status
            && let Some(out) = unsafe { ComRef::from_raw(d.outputParameterChanges) }
        {
            let mut idx = 0i32;
            let q = unsafe { out.addParameterData(&params::STATUS, &mut idx) };
            if let Some(q) = unsafe { ComRef::from_raw(q) } {
                let norm = PARAMS[params::STATUS as usize].to_normalized(status as f64);
                let mut pidx = 0i32;
                unsafe { q.addPoint(0, norm, &mut pidx) };
            }
        }
        kResultOk
    }
}

impl IProcessContextRequirementsTrait for Vst3Monitor {
    unsafe fn getProcessContextRequirements(&self) -> u32 {
        0
    }
}

impl IEditControllerTrait for Vst3Monitor {
    unsafe fn setComponentState(&self, stream: *mut IBStream) -> tresult {
        // Same object: the component state was already applied by IComponent::setState; applying
        // it again is harmless and keeps hosts that only call this one working.
        guard(kInternalError, || self.apply_state(stream))
    }

    unsafe fn setState(&self, _state: *mut IBStream) -> tresult {
        kResultOk
    }

    unsafe fn getState(&self, _state: *mut IBStream) -> tresult {
        kResultOk
    }

    unsafe fn getParameterCount(&self) -> i32 {
        PARAMS.len() as i32
    }

    unsafe fn getParameterInfo(&self, index: i32, info: *mut ParameterInfo) -> tresult {
        guard(kInternalError, || {
            let (Some(p), false) = (PARAMS.get(index.max(0) as usize), info.is_null()) else {
                return kInvalidArgument;
            };
            if index < 0 {
                return kInvalidArgument;
            }
            // SAFETY: checked non-null.
            let info = unsafe { &mut *info };
            info.id = p.id;
            copy_wstring(p.name, &mut info.title);
            copy_wstring(p.short, &mut info.shortTitle);
            copy_wstring(p.unit, &mut info.units);
            info.stepCount = p.step_count() as i32;
            info.defaultNormalizedValue = p.to_normalized(p.default);
            info.unitId = 0;
            use ParameterInfo_::ParameterFlags_::*;
            info.flags = match p.kind {
                Kind::Float | Kind::Stepped => kCanAutomate,
                Kind::Choice(_) => kCanAutomate | kIsList,
                Kind::Bypass => kCanAutomate | kIsBypass,
                Kind::Status(_) => kIsReadOnly | kIsList,
            };
            kResultOk
        })
    }

    unsafe fn getParamStringByValue(&self, id: u32, value: f64, string: *mut String128) -> tresult {
        guard(kInternalError, || {
            let Some(p) = params::spec(id) else {
                return kInvalidArgument;
            };
            if string.is_null() {
                return kInvalidArgument;
            }
            // SAFETY: checked non-null.
            copy_wstring(&p.format(p.from_normalized(value)), unsafe { &mut *string });
            kResultOk
        })
    }

    unsafe fn getParamValueByString(
        &self,
        id: u32,
        string: *mut TChar,
        value: *mut f64,
    ) -> tresult {
        guard(kInternalError, || {
            let Some(p) = params::spec(id) else {
                return kInvalidArgument;
            };
            // SAFETY: host-provided NUL-terminated string.
            let Some(text) = (unsafe { read_wstring(string) }) else {
                return kInvalidArgument;
            };
            match (p.parse(&text), value.is_null()) {
                (Some(v), false) => {
                    // SAFETY: checked non-null.
                    unsafe { *value = p.to_normalized(v) };
                    kResultOk
                }
                _ => kResultFalse,
            }
        })
    }

    unsafe fn normalizedParamToPlain(&self, id: u32, value: f64) -> f64 {
        params::spec(id).map_or(0.0, |p| p.from_normalized(value))
    }

    unsafe fn plainParamToNormalized(&self, id: u32, plain: f64) -> f64 {
        params::spec(id).map_or(0.0, |p| p.to_normalized(plain))
    }

    unsafe fn getParamNormalized(&self, id: u32) -> f64 {
        let Some(p) = params::spec(id) else {
            return 0.0;
        };
        let v = if id == params::STATUS {
            self.status.load(Ordering::Relaxed) as f64
        } else {
            self.params.get(id).unwrap_or(p.default)
        };
        p.to_normalized(v)
    }

    unsafe fn setParamNormalized(&self, id: u32, value: f64) -> tresult {
        match params::spec(id) {
            Some(p) if !p.is_read_only() => {
                self.params.set_from_host(id, p.from_normalized(value));
                kResultOk
            }
            Some(_) => kResultOk,
            None => kInvalidArgument,
        }
    }

    unsafe fn setComponentHandler(&self, handler: *mut IComponentHandler) -> tresult {
        guard(kInternalError, || {
            // SAFETY: host-provided or null; to_com_ptr adds a reference.
            self.main().handler = unsafe { ComRef::from_raw(handler) }.map(|h| h.to_com_ptr());
            kResultOk
        })
    }

    unsafe fn createView(&self, _name: *const c_char) -> *mut IPlugView {
        ptr::null_mut()
    }
}

pub struct Factory;

impl Class for Factory {
    type Interfaces = (IPluginFactory,);
}

impl IPluginFactoryTrait for Factory {
    unsafe fn getFactoryInfo(&self, info: *mut PFactoryInfo) -> tresult {
        if info.is_null() {
            return kInvalidArgument;
        }
        // SAFETY: checked non-null.
        let info = unsafe { &mut *info };
        copy_cstring(crate::VENDOR, &mut info.vendor);
        copy_cstring("https://example.invalid/funcodec-rs", &mut info.url);
        copy_cstring("", &mut info.email);
        info.flags = PFactoryInfo_::FactoryFlags_::kUnicode as int32;
        kResultOk
    }

    unsafe fn countClasses(&self) -> i32 {
        1
    }

    unsafe fn getClassInfo(&self, index: i32, info: *mut PClassInfo) -> tresult {
        if index != 0 || info.is_null() {
            return kInvalidArgument;
        }
        // SAFETY: checked non-null.
        let info = unsafe { &mut *info };
        info.cid = Vst3Monitor::CID;
        info.cardinality = PClassInfo_::ClassCardinality_::kManyInstances as int32;
        copy_cstring("Audio Module Class", &mut info.category);
        copy_cstring(crate::PLUGIN_NAME, &mut info.name);
        kResultOk
    }

    unsafe fn createInstance(
        &self,
        cid: FIDString,
        iid: FIDString,
        obj: *mut *mut c_void,
    ) -> tresult {
        guard(kInternalError, || {
            if cid.is_null() || iid.is_null() || obj.is_null() {
                return kInvalidArgument;
            }
            // SAFETY: cid points to a 16-byte TUID.
            if unsafe { *(cid as *const TUID) } != Vst3Monitor::CID {
                return kInvalidArgument;
            }
            let Some(instance) = ComWrapper::new(Vst3Monitor::new()).to_com_ptr::<FUnknown>()
            else {
                return kInternalError;
            };
            let p = instance.as_ptr();
            // SAFETY: `p` is a valid FUnknown; queryInterface adds the reference the caller owns.
            unsafe { ((*(*p).vtbl).queryInterface)(p, iid as *mut TUID, obj) }
        })
    }
}

#[cfg(target_os = "linux")]
#[unsafe(no_mangle)]
extern "system" fn ModuleEntry(_library_handle: *mut c_void) -> bool {
    true
}

#[cfg(target_os = "linux")]
#[unsafe(no_mangle)]
extern "system" fn ModuleExit() -> bool {
    true
}

#[cfg(target_os = "windows")]
#[unsafe(no_mangle)]
extern "system" fn InitDll() -> bool {
    true
}

#[cfg(target_os = "windows")]
#[unsafe(no_mangle)]
extern "system" fn ExitDll() -> bool {
    true
}

#[cfg(target_os = "macos")]
#[unsafe(no_mangle)]
extern "system" fn BundleEntry(_bundle_ref: *mut c_void) -> bool {
    true
}

#[cfg(target_os = "macos")]
#[unsafe(no_mangle)]
extern "system" fn BundleExit() -> bool {
    true
}

/// The VST3 module entry point.
#[unsafe(no_mangle)]
pub extern "system" fn GetPluginFactory() -> *mut IPluginFactory {
    guard(ptr::null_mut(), || {
        ComWrapper::new(Factory)
            .to_com_ptr::<IPluginFactory>()
            .map_or(ptr::null_mut(), |p| p.into_raw())
    })
}
