//! CLAP shell (clack-plugin): ports (stereo or mono configuration), latency, parameters, state,
//! render mode. Everything audible happens in [`crate::dsp::Engine`].

use std::cell::RefCell;
use std::ffi::CStr;
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use clack_extensions::audio_ports::{
    AudioPortFlags, AudioPortInfo, AudioPortInfoWriter, AudioPortType, PluginAudioPorts,
    PluginAudioPortsImpl,
};
use clack_extensions::audio_ports_config::{
    AudioPortConfigWriter, AudioPortsConfiguration, MainPortInfo, PluginAudioPortsConfig,
    PluginAudioPortsConfigImpl,
};
use clack_extensions::latency::{HostLatency, PluginLatency, PluginLatencyImpl};
use clack_extensions::params::{
    HostParams, ParamDisplayWriter, ParamInfo, ParamInfoFlags, ParamInfoWriter, ParamRescanFlags,
    PluginAudioProcessorParams, PluginMainThreadParams, PluginParams,
};
use clack_extensions::render::{PluginRender, PluginRenderImpl, RenderMode};
use clack_extensions::state::{PluginState, PluginStateImpl};
use clack_plugin::events::event_types::ParamValueEvent;
use clack_plugin::events::spaces::CoreEventSpace;
use clack_plugin::prelude::*;
use clack_plugin::stream::{InputStream, OutputStream};

use crate::dsp::{Engine, EngineConfig, LatencyPlan, MAX_CHANNELS};
use crate::model::ModelSlot;
use crate::params::{self, Kind, PARAMS, ParamStore};
use crate::state::{self, SavedState};

pub struct MonitorPlugin;

/// Shared between the main thread and the audio thread: atomics only.
pub struct Shared {
    pub params: ParamStore,
    latency: AtomicU32,
    status: AtomicU32,
    offline: AtomicBool,
    channels: AtomicU32,
}

impl PluginShared<'_> for Shared {}

pub struct MainThread<'a> {
    shared: &'a Shared,
    host: HostMainThreadHandle<'a>,
    model: RefCell<ModelSlot>,
    active: std::cell::Cell<bool>,
}

impl<'a> PluginMainThread<'a, Shared> for MainThread<'a> {}

pub struct Processor<'a> {
    shared: &'a Shared,
    engine: Engine,
}

impl Plugin for MonitorPlugin {
    type AudioProcessor<'a> = Processor<'a>;
    type Shared<'a> = Shared;
    type MainThread<'a> = MainThread<'a>;

    fn declare_extensions(builder: &mut PluginExtensions<Self>, _shared: Option<&Shared>) {
        builder
            .register::<PluginAudioPorts>()
            .register::<PluginAudioPortsConfig>()
            .register::<PluginLatency>()
            .register::<PluginParams>()
            .register::<PluginState>()
            .register::<PluginRender>();
    }
}

impl DefaultPluginFactory for MonitorPlugin {
    fn get_descriptor() -> PluginDescriptor {
        use clack_plugin::plugin::features::*;
        PluginDescriptor::new(crate::CLAP_ID, crate::PLUGIN_NAME)
            .with_vendor(crate::VENDOR)
            .with_version(crate::VERSION)
            .with_description(
                "Hear a voice through the FunCodec neural speech codec at a chosen bitrate, \
                 or only its artifacts",
            )
            .with_features([AUDIO_EFFECT, UTILITY, ANALYZER, STEREO, MONO])
    }

    fn new_shared(_host: HostSharedHandle<'_>) -> Result<Shared, PluginError> {
        // Cheap: the model is loaded at activation, never while the host scans.
        Ok(Shared {
            params: ParamStore::default(),
            latency: AtomicU32::new(LatencyPlan::fallback(48_000, 1024).latency),
            status: AtomicU32::new(0),
            offline: AtomicBool::new(false),
            channels: AtomicU32::new(2),
        })
    }

    fn new_main_thread<'a>(
        host: HostMainThreadHandle<'a>,
        shared: &'a Shared,
    ) -> Result<MainThread<'a>, PluginError> {
        Ok(MainThread {
            shared,
            host,
            model: RefCell::new(ModelSlot::default()),
            active: std::cell::Cell::new(false),
        })
    }
}

impl<'a> PluginAudioProcessor<'a, Shared, MainThread<'a>> for Processor<'a> {
    fn activate(
        _host: HostAudioProcessorHandle<'a>,
        main_thread: &MainThread<'a>,
        shared: &'a Shared,
        cfg: PluginAudioConfiguration,
    ) -> Result<Self, PluginError> {
        let source = main_thread.model.borrow_mut().source();
        let engine = Engine::new(
            &EngineConfig {
                sample_rate: cfg.sample_rate,
                max_block: cfg.max_frames_count as usize,
                channels: shared.channels.load(Ordering::Relaxed) as usize,
            },
            source,
            shared.params.settings(),
        );
        let latency = engine.latency();
        if shared.latency.swap(latency, Ordering::AcqRel) != latency
            && let Some(l) = main_thread.host.get_extension::<HostLatency>()
        {
            // Allowed during activate by the latency extension.
            l.changed(&main_thread.host);
        }
        let status = engine.status() as u32;
        if shared.status.swap(status, Ordering::AcqRel) != status
            && let Some(p) = main_thread.host.get_extension::<HostParams>()
        {
            p.rescan(&main_thread.host, ParamRescanFlags::VALUES);
        }
        main_thread.active.set(true);
        Ok(Processor { shared, engine })
    }

    fn deactivate(self, main_thread: &MainThread<'a>) {
        main_thread.active.set(false);
        // Dropping the engine stops and joins its worker (main thread).
        drop(self);
    }

    fn reset(&mut self) {
        self.engine.reset();
    }

    fn start_processing(&mut self) -> Result<(), PluginError> {
        Ok(())
    }

    fn process(
        &mut self,
        _process: Process,
        mut audio: Audio,
        events: Events,
    ) -> Result<ProcessStatus, PluginError> {
        let _ftz = crate::DenormalGuard::new();
        self.engine
            .set_offline(self.shared.offline.load(Ordering::Relaxed));
        let frames = audio.frames_count() as usize;
        let Some(mut pair) = audio.port_pair(0) else {
            for e in events.input {
                handle_event(&self.shared.params, e);
            }
            return Ok(ProcessStatus::Continue);
        };
        let mut chans = pair
            .channels()?
            .into_f32()
            .ok_or(PluginError::Message("expected 32-bit float audio"))?;
        let mut bufs: [Option<&mut [f32]>; MAX_CHANNELS] = [None, None];
        let mut n = 0;
        for pair in chans.iter_mut() {
            if n == MAX_CHANNELS {
                break;
            }
            bufs[n] = match pair {
                ChannelPair::InPlace(b) => Some(b),
                ChannelPair::InputOutput(i, o) => {
                    o.copy_from_slice(i);
                    Some(o)
                }
                ChannelPair::OutputOnly(o) => {
                    o.fill(0.0);
                    Some(o)
                }
                ChannelPair::InputOnly(_) => None,
            };
            if bufs[n].is_some() {
                n += 1;
            }
        }
        for batch in events.input.batch() {
            for e in batch.events() {
                handle_event(&self.shared.params, e);
            }
            let start = batch.first_sample().min(frames);
            let end = batch
                .next_batch_first_sample()
                .unwrap_or(frames)
                .clamp(start, frames);
            if end == start {
                continue;
            }
            let settings = self.shared.params.settings();
            let mut sub: [&mut [f32]; MAX_CHANNELS] = [&mut [], &mut []];
            let mut k = 0;
            for b in bufs.iter_mut().flatten() {
                sub[k] = &mut b[start..end];
                k += 1;
            }
            self.engine.process(&mut sub[..k], &settings);
        }
        let status = self.engine.status() as u32;
        if self.shared.status.swap(status, Ordering::Relaxed) != status {
            let ev = ParamValueEvent::new(
                0,
                ClapId::new(params::STATUS),
                Pckn::match_all(),
                status as f64,
            );
            let _ = events.output.try_push(ev);
        }
        Ok(ProcessStatus::Continue)
    }
}

fn handle_event(store: &ParamStore, e: &UnknownEvent) {
    if let Some(CoreEventSpace::ParamValue(ev)) = e.as_core_event()
        && let Some(id) = ev.param_id()
    {
        store.set_from_host(id.get(), ev.value());
    }
}

impl PluginAudioProcessorParams for Processor<'_> {
    fn flush(&mut self, input: &InputEvents, _output: &mut OutputEvents) {
        for e in input {
            handle_event(&self.shared.params, e);
        }
    }
}

impl PluginMainThreadParams for MainThread<'_> {
    fn count(&self) -> u32 {
        PARAMS.len() as u32
    }

    fn get_info(&self, index: u32, info: &mut ParamInfoWriter) {
        let Some(p) = PARAMS.get(index as usize) else {
            return;
        };
        let mut flags = match p.kind {
            Kind::Float => ParamInfoFlags::IS_AUTOMATABLE,
            Kind::Stepped => ParamInfoFlags::IS_AUTOMATABLE | ParamInfoFlags::IS_STEPPED,
            Kind::Choice(_) => {
                ParamInfoFlags::IS_AUTOMATABLE
                    | ParamInfoFlags::IS_STEPPED
                    | ParamInfoFlags::IS_ENUM
            }
            Kind::Bypass => {
                ParamInfoFlags::IS_AUTOMATABLE
                    | ParamInfoFlags::IS_STEPPED
                    | ParamInfoFlags::IS_BYPASS
            }
            Kind::Status(_) => {
                ParamInfoFlags::IS_READONLY | ParamInfoFlags::IS_STEPPED | ParamInfoFlags::IS_ENUM
            }
        };
        if !p.is_read_only() {
            flags |= ParamInfoFlags::REQUIRES_PROCESS;
        }
        info.set(&ParamInfo {
            id: ClapId::new(p.id),
            flags,
            cookie: Default::default(),
            name: p.name.as_bytes(),
            module: b"",
            min_value: p.min,
            max_value: p.max,
            default_value: p.default,
        });
    }

    fn get_value(&self, id: ClapId) -> Option<f64> {
        if id.get() == params::STATUS {
            return Some(self.shared.status.load(Ordering::Relaxed) as f64);
        }
        self.shared.params.get(id.get())
    }

    fn value_to_text(
        &self,
        id: ClapId,
        value: f64,
        writer: &mut ParamDisplayWriter,
    ) -> std::fmt::Result {
        let p = params::spec(id.get()).ok_or(std::fmt::Error)?;
        write!(writer, "{}", p.format(value))
    }

    fn text_to_value(&self, id: ClapId, text: &CStr) -> Option<f64> {
        params::spec(id.get())?.parse(text.to_str().ok()?)
    }

    fn flush(&self, input: &InputEvents, _output: &mut OutputEvents) {
        for e in input {
            handle_event(&self.shared.params, e);
        }
    }
}

impl PluginLatencyImpl for MainThread<'_> {
    fn get(&self) -> u32 {
        self.shared.latency.load(Ordering::Acquire)
    }
}

impl PluginRenderImpl for MainThread<'_> {
    fn has_hard_realtime_requirement(&self) -> bool {
        false
    }
    fn set(&self, mode: RenderMode) -> Result<(), PluginError> {
        self.shared
            .offline
            .store(matches!(mode, RenderMode::Offline), Ordering::Relaxed);
        Ok(())
    }
}

impl PluginStateImpl for MainThread<'_> {
    fn save(&self, output: &mut OutputStream) -> Result<(), PluginError> {
        let bytes = state::encode(&SavedState {
            params: self.shared.params.snapshot(),
            model: self.model.borrow().choice().to_string(),
        });
        output.write_all(&bytes)?;
        Ok(())
    }

    fn load(&self, input: &mut InputStream) -> Result<(), PluginError> {
        let mut bytes = Vec::new();
        input.read_to_end(&mut bytes)?;
        let s = state::decode(&bytes).map_err(|_| PluginError::Message("invalid state"))?;
        for (id, v) in s.params {
            self.shared.params.set_from_host(id, v);
        }
        let changed = self.model.borrow_mut().set_choice(&s.model);
        if let Some(p) = self.host.get_extension::<HostParams>() {
            p.rescan(&self.host, ParamRescanFlags::VALUES);
        }
        if changed && self.active.get() {
            // The model is loaded at activation: ask the host to deactivate and reactivate.
            self.host.request_restart();
        }
        Ok(())
    }
}

const STEREO_CONFIG: u32 = 0;
const MONO_CONFIG: u32 = 1;

impl PluginAudioPortsImpl for MainThread<'_> {
    fn count(&self, _is_input: bool) -> u32 {
        1
    }

    fn get(&self, index: u32, is_input: bool, writer: &mut AudioPortInfoWriter) {
        if index != 0 {
            return;
        }
        let stereo = self.shared.channels.load(Ordering::Relaxed) == 2;
        writer.set(&AudioPortInfo {
            id: ClapId::new(0),
            name: if is_input { b"Input" } else { b"Output" },
            channel_count: if stereo { 2 } else { 1 },
            flags: AudioPortFlags::IS_MAIN,
            port_type: Some(if stereo {
                AudioPortType::STEREO
            } else {
                AudioPortType::MONO
            }),
            in_place_pair: Some(ClapId::new(0)),
        });
    }
}

impl PluginAudioPortsConfigImpl for MainThread<'_> {
    fn count(&self) -> u32 {
        2
    }

    fn get(&self, index: u32, writer: &mut AudioPortConfigWriter) {
        let (id, name, ch, ty): (u32, &[u8], u32, AudioPortType) = match index {
            0 => (STEREO_CONFIG, b"Stereo", 2, AudioPortType::STEREO),
            1 => (MONO_CONFIG, b"Mono", 1, AudioPortType::MONO),
            _ => return,
        };
        let main = MainPortInfo {
            channel_count: ch,
            port_type: Some(ty),
        };
        writer.write(&AudioPortsConfiguration {
            id: ClapId::new(id),
            name,
            input_port_count: 1,
            output_port_count: 1,
            main_input: Some(main),
            main_output: Some(main),
        });
    }

    fn select(&self, id: ClapId) -> Result<(), PluginError> {
        let ch = match id.get() {
            STEREO_CONFIG => 2,
            MONO_CONFIG => 1,
            _ => return Err(PluginError::Message("unknown port configuration")),
        };
        self.shared.channels.store(ch, Ordering::Relaxed);
        Ok(())
    }
}

clack_plugin::clack_export_entry!(SinglePluginEntry<MonitorPlugin>);
