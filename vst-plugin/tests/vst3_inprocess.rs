//! The VST3 shell driven directly through its COM interfaces, in-process (the library is linked
//! into this test): factory, single-component class, buses, parameters, state through IBStream,
//! latency from setupProcessing, processing with the exact alignment of the difference signal,
//! calls without buses, and zero heap allocations on the audio thread in `process`.
//! (The built `.vst3` bundle in a real host is tested by `vst3_pedalboard.rs`.)

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_void};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};

use common::*;
use funcodec_monitor::dsp::codec::CodecSource;
use funcodec_monitor::dsp::plan_for;
use funcodec_monitor::params::{self, PARAMS};
use funcodec_monitor::state::{self, SavedState};
use funcodec_monitor::vst3_shell::GetPluginFactory;
use vst3::Steinberg::Vst::*;
use vst3::Steinberg::*;
use vst3::{Class, ComPtr, ComWrapper, Interface};

struct Counting;
thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
}
static ALLOCS: AtomicU64 = AtomicU64::new(0);
fn counting() -> bool {
    ON.try_with(|c| c.get()).unwrap_or(false)
}
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.realloc(p, l, n) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        if counting() {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.dealloc(p, l) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;

/// A memory IBStream for getState/setState.
struct MemStream {
    data: RefCell<Vec<u8>>,
    pos: Cell<usize>,
}

impl Class for MemStream {
    type Interfaces = (IBStream,);
}

impl IBStreamTrait for MemStream {
    unsafe fn read(&self, buf: *mut c_void, n: i32, read: *mut i32) -> tresult {
        let d = self.data.borrow();
        let k = (n.max(0) as usize).min(d.len() - self.pos.get());
        unsafe { ptr::copy_nonoverlapping(d.as_ptr().add(self.pos.get()), buf as *mut u8, k) };
        self.pos.set(self.pos.get() + k);
        if !read.is_null() {
            unsafe { *read = k as i32 };
        }
        kResultOk
    }
    unsafe fn write(&self, buf: *mut c_void, n: i32, written: *mut i32) -> tresult {
        let s = unsafe { std::slice::from_raw_parts(buf as *const u8, n.max(0) as usize) };
        self.data.borrow_mut().extend_from_slice(s);
        if !written.is_null() {
            unsafe { *written = n };
        }
        kResultOk
    }
    unsafe fn seek(&self, pos: i64, _mode: i32, result: *mut i64) -> tresult {
        self.pos.set(pos.max(0) as usize);
        if !result.is_null() {
            unsafe { *result = pos };
        }
        kResultOk
    }
    unsafe fn tell(&self, pos: *mut i64) -> tresult {
        unsafe { *pos = self.pos.get() as i64 };
        kResultOk
    }
}

fn stream(bytes: Vec<u8>) -> ComWrapper<MemStream> {
    ComWrapper::new(MemStream {
        data: RefCell::new(bytes),
        pos: Cell::new(0),
    })
}

/// One parameter's automation points for a block.
struct Queue {
    id: u32,
    points: Vec<(i32, f64)>,
}
impl Class for Queue {
    type Interfaces = (IParamValueQueue,);
}
impl IParamValueQueueTrait for Queue {
    unsafe fn getParameterId(&self) -> u32 {
        self.id
    }
    unsafe fn getPointCount(&self) -> i32 {
        self.points.len() as i32
    }
    unsafe fn getPoint(&self, i: i32, offset: *mut i32, value: *mut f64) -> tresult {
        match self.points.get(i as usize) {
            Some(&(o, v)) => {
                unsafe {
                    *offset = o;
                    *value = v;
                }
                kResultOk
            }
            None => kInvalidArgument,
        }
    }
    unsafe fn addPoint(&self, _o: i32, _v: f64, _i: *mut i32) -> tresult {
        kResultFalse
    }
}

/// The parameter changes of one block.
struct Changes {
    queues: Vec<ComWrapper<Queue>>,
}
impl Class for Changes {
    type Interfaces = (IParameterChanges,);
}
impl IParameterChangesTrait for Changes {
    unsafe fn getParameterCount(&self) -> i32 {
        self.queues.len() as i32
    }
    unsafe fn getParameterData(&self, i: i32) -> *mut IParamValueQueue {
        self.queues
            .get(i as usize)
            .and_then(|q| q.as_com_ref::<IParamValueQueue>())
            .map_or(ptr::null_mut(), |r| r.as_ptr())
    }
    unsafe fn addParameterData(&self, _id: *const u32, _i: *mut i32) -> *mut IParamValueQueue {
        ptr::null_mut()
    }
}

struct Plugin {
    comp: ComPtr<IComponent>,
    proc: ComPtr<IAudioProcessor>,
    ctrl: ComPtr<IEditController>,
}

fn create() -> Plugin {
    let factory = unsafe { ComPtr::from_raw(GetPluginFactory()) }.expect("factory");
    unsafe {
        assert_eq!(factory.countClasses(), 1);
        let mut info: PClassInfo = std::mem::zeroed();
        assert_eq!(factory.getClassInfo(0, &mut info), kResultOk);
        let name = CStr::from_ptr(info.name.as_ptr()).to_str().unwrap();
        let cat = CStr::from_ptr(info.category.as_ptr()).to_str().unwrap();
        assert_eq!((name, cat), ("FunCodec Monitor", "Audio Module Class"));
        let mut obj: *mut c_void = ptr::null_mut();
        let r = factory.createInstance(
            info.cid.as_ptr(),
            IComponent::IID.as_ptr() as FIDString,
            &mut obj,
        );
        assert_eq!(r, kResultOk);
        let comp = ComPtr::from_raw(obj as *mut IComponent).expect("component");
        assert_eq!(comp.initialize(ptr::null_mut()), kResultOk);
        let proc = comp.cast::<IAudioProcessor>().expect("IAudioProcessor");
        let ctrl = comp
            .cast::<IEditController>()
            .expect("IEditController (single component)");
        Plugin { comp, proc, ctrl }
    }
}

impl Plugin {
    fn set_state(&self, model: &str, p: &[(u32, f64)]) {
        let s = stream(state::encode(&SavedState {
            params: p.to_vec(),
            model: model.into(),
        }));
        let ptr = s.to_com_ptr::<IBStream>().unwrap();
        assert_eq!(unsafe { self.comp.setState(ptr.as_ptr()) }, kResultOk);
    }
    fn setup(&self, rate: f64, max_block: i32, ch: i32) -> u32 {
        unsafe {
            let mut arr = if ch == 1 {
                SpeakerArr::kMono
            } else {
                SpeakerArr::kStereo
            };
            let mut arr2 = arr;
            assert_eq!(
                self.proc.setBusArrangements(&mut arr, 1, &mut arr2, 1),
                kResultTrue
            );
            let mut setup = ProcessSetup {
                processMode: ProcessModes_::kOffline as i32,
                symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
                maxSamplesPerBlock: max_block,
                sampleRate: rate,
            };
            assert_eq!(self.proc.setupProcessing(&mut setup), kResultOk);
            let lat = self.proc.getLatencySamples();
            assert_eq!(self.comp.setActive(1), kResultOk);
            assert_eq!(self.proc.setProcessing(1), kResultOk);
            lat
        }
    }
    /// Processes in place-separate buffers with blocks of `block`; counts allocations in process.
    fn run(&self, input: &[Vec<f32>], block: usize) -> Vec<Vec<f32>> {
        self.run_with(input, block, &[])
    }

    /// Same, with parameter changes for given blocks: (block index, changes).
    fn run_with(
        &self,
        input: &[Vec<f32>],
        block: usize,
        changes: &[(usize, &ComWrapper<Changes>)],
    ) -> Vec<Vec<f32>> {
        let ch = input.len();
        let n = input[0].len() / block * block;
        let mut out = vec![vec![0f32; n]; ch];
        let mut ib: Vec<Vec<f32>> = vec![vec![0.0; block]; ch];
        let mut ob: Vec<Vec<f32>> = vec![vec![0.0; block]; ch];
        let mut ip: Vec<*mut f32> = ib.iter_mut().map(|b| b.as_mut_ptr()).collect();
        let mut op: Vec<*mut f32> = ob.iter_mut().map(|b| b.as_mut_ptr()).collect();
        for k in 0..n / block {
            for c in 0..ch {
                ib[c].copy_from_slice(&input[c][k * block..(k + 1) * block]);
            }
            let mut inb = AudioBusBuffers {
                numChannels: ch as i32,
                silenceFlags: 0,
                __field0: AudioBusBuffers__type0 {
                    channelBuffers32: ip.as_mut_ptr(),
                },
            };
            let mut outb = AudioBusBuffers {
                numChannels: ch as i32,
                silenceFlags: 0,
                __field0: AudioBusBuffers__type0 {
                    channelBuffers32: op.as_mut_ptr(),
                },
            };
            let mut data = ProcessData {
                processMode: ProcessModes_::kOffline as i32,
                symbolicSampleSize: SymbolicSampleSizes_::kSample32 as i32,
                numSamples: block as i32,
                numInputs: 1,
                numOutputs: 1,
                inputs: &mut inb,
                outputs: &mut outb,
                inputParameterChanges: changes
                    .iter()
                    .find(|(b, _)| *b == k)
                    .and_then(|(_, c)| c.as_com_ref::<IParameterChanges>())
                    .map_or(ptr::null_mut(), |r| r.as_ptr()),
                outputParameterChanges: ptr::null_mut(),
                inputEvents: ptr::null_mut(),
                outputEvents: ptr::null_mut(),
                processContext: ptr::null_mut(),
            };
            ON.with(|c| c.set(true));
            let r = unsafe { self.proc.process(&mut data) };
            ON.with(|c| c.set(false));
            assert_eq!(r, kResultOk);
            for c in 0..ch {
                out[c][k * block..(k + 1) * block].copy_from_slice(&ob[c]);
            }
        }
        out
    }
    fn stop(&self) {
        unsafe {
            assert_eq!(self.proc.setProcessing(0), kResultOk);
            assert_eq!(self.comp.setActive(0), kResultOk);
        }
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        unsafe { self.comp.terminate() };
    }
}

#[test]
fn vst3_shell_in_process() {
    let p = create();
    unsafe {
        assert_eq!(p.ctrl.getParameterCount() as usize, PARAMS.len());
        let mut info: ParameterInfo = std::mem::zeroed();
        assert_eq!(
            p.ctrl.getParameterInfo(params::BYPASS as i32, &mut info),
            kResultOk
        );
        assert_ne!(info.flags & ParameterInfo_::ParameterFlags_::kIsBypass, 0);
        assert_eq!(
            p.ctrl.getParameterInfo(params::BITRATE as i32, &mut info),
            kResultOk
        );
        assert_eq!(info.stepCount, 31);
        assert_eq!(
            p.comp
                .getBusCount(MediaTypes_::kAudio as i32, BusDirections_::kInput as i32),
            1
        );
        // No buses at all (the VST3 validator does this): no crash, kResultOk.
        let mut empty: ProcessData = std::mem::zeroed();
        assert_eq!(p.proc.process(&mut empty), kResultOk);
    }
    ALLOCS.store(0, Ordering::Relaxed);
    for &(rate, ch, block) in &[
        (44_100.0, 2usize, 512usize),
        (48_000.0, 1, 64),
        (96_000.0, 2, 1),
    ] {
        // Difference of the identity path: silence; codec: the input delayed by the latency.
        p.set_state("@identity", &[(params::MONITOR, 2.0)]);
        let lat = p.setup(rate, block as i32, ch as i32);
        let plan = plan_for(rate, block, &Ok(CodecSource::Identity));
        assert_eq!(lat, plan.latency, "getLatencySamples after setupProcessing");
        let secs = if block == 1 { 0.3 } else { 1.0 };
        let x = voice(rate as u32, secs, 6000.0);
        let input: Vec<Vec<f32>> = (0..ch).map(|_| x.clone()).collect();
        let diff = p.run(&input, block);
        unsafe { p.ctrl.setParamNormalized(params::MONITOR, 0.0) };
        let codec = p.run(&input, block);
        p.stop();
        let n = codec[0].len();
        let lat = lat as usize;
        for c in 0..ch {
            let d = db(rms(&diff[c]) / rms(&x[..n]));
            let e: Vec<f32> = (lat + 2000..n).map(|i| codec[c][i] - x[i - lat]).collect();
            let e = db(rms(&e) / rms(&x));
            println!(
                "VST3 in-process {rate} Hz {ch} ch block {block}: latency {lat}, difference {d:.1} dB, decoded vs delayed input {e:.1} dB"
            );
            assert!(d < -60.0 && e < -60.0);
        }
    }
    let allocs = ALLOCS.load(Ordering::Relaxed);
    println!("VST3 process: {allocs} allocations/frees on the audio thread");
    assert_eq!(allocs, 0);

    // Sample-accurate automation: the output gain drops to -6.02 dB at sample 100 of block 1
    // (20 ms ramp), the monitor switches from difference to dry at sample 0 of block 0.
    p.set_state("@identity", &[(params::MONITOR, 2.0)]);
    let lat = p.setup(48_000.0, 512, 1) as usize;
    let x = voice(48_000, 1.0, 6000.0);
    let gain = &PARAMS[params::GAIN as usize];
    let mon = &PARAMS[params::MONITOR as usize];
    let c0 = ComWrapper::new(Changes {
        queues: vec![ComWrapper::new(Queue {
            id: params::MONITOR,
            points: vec![(0, mon.to_normalized(1.0))],
        })],
    });
    let c1 = ComWrapper::new(Changes {
        queues: vec![ComWrapper::new(Queue {
            id: params::GAIN,
            points: vec![
                (50, gain.to_normalized(0.0)),
                (100, gain.to_normalized(-6.0206)),
            ],
        })],
    });
    let out = p.run_with(std::slice::from_ref(&x), 512, &[(0, &c0), (10, &c1)]);
    p.stop();
    let o = &out[0];
    let dry = |i: usize| if i >= lat { x[i - lat] } else { 0.0 };
    let at = 10 * 512 + 100; // after the latency: audible
    assert!(at > lat + 100);
    // Monitor switched to dry in block 0 (during the silent start): exactly the delayed input
    // up to the gain point.
    assert!((0..at).all(|i| o[i] == dry(i)), "dry before the gain point");
    // The gain ramp starts at its point, not at the block start, and ends 20 ms later at 0.5.
    let k = (at..at + 100).find(|&i| dry(i).abs() > 1e-3).unwrap();
    assert!(
        (o[k] - dry(k)).abs() > 1e-7,
        "ramp did not start at the point's offset"
    );
    assert!(
        (at + 961..o.len()).all(|i| (o[i] - 0.5 * dry(i)).abs() < 1e-6),
        "gain not applied"
    );
    let allocs = ALLOCS.load(Ordering::Relaxed);
    println!("VST3 process with parameter changes: {allocs} allocations/frees on the audio thread");
    assert_eq!(allocs, 0);

    // State out: what was set, plus the model choice.
    let s = stream(Vec::new());
    let sp = s.to_com_ptr::<IBStream>().unwrap();
    unsafe {
        p.ctrl.setParamNormalized(params::BITRATE, 1.0);
        assert_eq!(p.comp.getState(sp.as_ptr()), kResultOk);
    }
    let saved = state::decode(&s.data.borrow()).unwrap();
    assert_eq!(saved.model, "@identity");
    assert!(saved.params.contains(&(params::BITRATE, 8000.0)));
    // Garbage state is refused.
    let bad = stream(b"garbage".to_vec());
    let bp = bad.to_com_ptr::<IBStream>().unwrap();
    assert_ne!(unsafe { p.comp.setState(bp.as_ptr()) }, kResultOk);
}
