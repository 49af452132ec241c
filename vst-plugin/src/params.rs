//! The parameter table both shells expose, the lock-free store holding the current values, and
//! the value <-> text conversions. CLAP sees plain values (the ranges below); VST3 sees
//! normalised 0..1 values mapped linearly (stepped parameters rounded to their steps).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::dsp::{Monitor, Settings};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Continuous.
    Float,
    /// Integer steps of `step` between min and max.
    Stepped,
    /// Named choices 0..=max.
    Choice(&'static [&'static str]),
    Bypass,
    /// Read-only status, named choices.
    Status(&'static [&'static str]),
}

#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub id: u32,
    pub name: &'static str,
    pub short: &'static str,
    pub unit: &'static str,
    pub min: f64,
    pub max: f64,
    pub default: f64,
    /// Step size for stepped kinds (1 for choices).
    pub step: f64,
    pub kind: Kind,
}

impl ParamSpec {
    /// Number of steps (0 = continuous), as VST3 counts them.
    pub fn step_count(&self) -> u32 {
        match self.kind {
            Kind::Float => 0,
            _ => ((self.max - self.min) / self.step).round() as u32,
        }
    }
    pub fn is_stepped(&self) -> bool {
        self.step_count() > 0
    }
    pub fn is_read_only(&self) -> bool {
        matches!(self.kind, Kind::Status(_))
    }
    /// Clamps (and rounds stepped values); NaN gives the default.
    pub fn sanitize(&self, v: f64) -> f64 {
        if !v.is_finite() {
            return self.default;
        }
        let v = v.clamp(self.min, self.max);
        if self.is_stepped() {
            self.min + ((v - self.min) / self.step).round() * self.step
        } else {
            v
        }
    }
    pub fn to_normalized(&self, plain: f64) -> f64 {
        ((self.sanitize(plain) - self.min) / (self.max - self.min)).clamp(0.0, 1.0)
    }
    pub fn from_normalized(&self, norm: f64) -> f64 {
        let n = if norm.is_finite() {
            norm.clamp(0.0, 1.0)
        } else {
            self.to_normalized(self.default)
        };
        self.sanitize(self.min + n * (self.max - self.min))
    }

    pub fn format(&self, plain: f64) -> String {
        let v = self.sanitize(plain);
        match self.kind {
            Kind::Choice(names) | Kind::Status(names) => names
                .get(v.round() as usize)
                .copied()
                .unwrap_or("?")
                .to_string(),
            Kind::Bypass => if v >= 0.5 { "On" } else { "Off" }.to_string(),
            Kind::Stepped => format!("{v:.0} {}", self.unit),
            Kind::Float => format!("{v:.1} {}", self.unit),
        }
    }

    /// Parses what [`Self::format`] writes (and bare numbers, and choice names in any case).
    pub fn parse(&self, text: &str) -> Option<f64> {
        let t = text.trim();
        match self.kind {
            Kind::Choice(names) | Kind::Status(names) => {
                if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(t)) {
                    return Some(i as f64);
                }
            }
            Kind::Bypass => {
                if t.eq_ignore_ascii_case("on") {
                    return Some(1.0);
                }
                if t.eq_ignore_ascii_case("off") {
                    return Some(0.0);
                }
            }
            _ => {}
        }
        let num = t.strip_suffix(self.unit).unwrap_or(t).trim();
        let v: f64 = num.parse().ok()?;
        v.is_finite().then(|| self.sanitize(v))
    }
}

pub const BITRATE: u32 = 0;
pub const MONITOR: u32 = 1;
pub const MIX: u32 = 2;
pub const GAIN: u32 = 3;
pub const LOSS: u32 = 4;
pub const BYPASS: u32 = 5;
pub const STATUS: u32 = 6;

pub const MONITOR_NAMES: &[&str] = &["Codec", "Dry", "Difference"];
pub const STATUS_NAMES: &[&str] = &["OK", "No model (dry)", "Dropouts"];

/// The table: index == id.
pub const PARAMS: [ParamSpec; 7] = [
    ParamSpec {
        id: BITRATE,
        name: "Bitrate",
        short: "Bitrate",
        unit: "bit/s",
        min: 250.0,
        max: 8000.0,
        default: 2000.0,
        step: 250.0,
        kind: Kind::Stepped,
    },
    ParamSpec {
        id: MONITOR,
        name: "Monitor",
        short: "Monitor",
        unit: "",
        min: 0.0,
        max: 2.0,
        default: 0.0,
        step: 1.0,
        kind: Kind::Choice(MONITOR_NAMES),
    },
    ParamSpec {
        id: MIX,
        name: "Dry/Wet",
        short: "Mix",
        unit: "%",
        min: 0.0,
        max: 100.0,
        default: 100.0,
        step: 0.0,
        kind: Kind::Float,
    },
    ParamSpec {
        id: GAIN,
        name: "Output Gain",
        short: "Gain",
        unit: "dB",
        min: -24.0,
        max: 24.0,
        default: 0.0,
        step: 0.0,
        kind: Kind::Float,
    },
    ParamSpec {
        id: LOSS,
        name: "Packet Loss",
        short: "Loss",
        unit: "%",
        min: 0.0,
        max: 50.0,
        default: 0.0,
        step: 0.0,
        kind: Kind::Float,
    },
    ParamSpec {
        id: BYPASS,
        name: "Bypass",
        short: "Bypass",
        unit: "",
        min: 0.0,
        max: 1.0,
        default: 0.0,
        step: 1.0,
        kind: Kind::Bypass,
    },
    ParamSpec {
        id: STATUS,
        name: "Status",
        short: "Status",
        unit: "",
        min: 0.0,
        max: 2.0,
        default: 0.0,
        step: 1.0,
        kind: Kind::Status(STATUS_NAMES),
    },
];

pub fn spec(id: u32) -> Option<&'static ParamSpec> {
    PARAMS.get(id as usize)
}

/// Current plain values, shared by the main thread, the audio thread and the host: atomics only.
pub struct ParamStore {
    values: [AtomicU64; PARAMS.len()],
}

impl Default for ParamStore {
    fn default() -> Self {
        ParamStore {
            values: std::array::from_fn(|i| AtomicU64::new(PARAMS[i].default.to_bits())),
        }
    }
}

impl ParamStore {
    pub fn get(&self, id: u32) -> Option<f64> {
        self.values
            .get(id as usize)
            .map(|v| f64::from_bits(v.load(Ordering::Relaxed)))
    }
    /// Sets a plain value (sanitised); false for an unknown id.
    pub fn set(&self, id: u32, plain: f64) -> bool {
        match (spec(id), self.values.get(id as usize)) {
            (Some(s), Some(v)) => {
                v.store(s.sanitize(plain).to_bits(), Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
    /// Sets a parameter from the host (read-only ones are ignored).
    pub fn set_from_host(&self, id: u32, plain: f64) -> bool {
        match spec(id) {
            Some(s) if !s.is_read_only() => self.set(id, plain),
            _ => false,
        }
    }
    fn val(&self, id: u32) -> f64 {
        self.get(id).unwrap_or(0.0)
    }
    /// The engine's view of the current values.
    pub fn settings(&self) -> Settings {
        Settings {
            bitrate: self.val(BITRATE),
            monitor: Monitor::from_index(self.val(MONITOR).round() as u32),
            mix: self.val(MIX) / 100.0,
            gain_db: self.val(GAIN),
            loss: self.val(LOSS) / 100.0,
            bypass: self.val(BYPASS) >= 0.5,
        }
    }
    /// Automatable values, for the state: (id, plain value).
    pub fn snapshot(&self) -> Vec<(u32, f64)> {
        PARAMS
            .iter()
            .filter(|p| !p.is_read_only())
            .map(|p| (p.id, self.val(p.id)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_ranges() {
        for p in &PARAMS {
            for &v in &[p.min, p.default, p.max, 0.5 * (p.min + p.max)] {
                let v = p.sanitize(v);
                let t = p.format(v);
                let back = p
                    .parse(&t)
                    .unwrap_or_else(|| panic!("{}: cannot parse {t:?}", p.name));
                let tol = if p.is_stepped() { 0.0 } else { 0.051 };
                assert!(
                    (back - v).abs() <= tol,
                    "{}: {v} -> {t:?} -> {back}",
                    p.name
                );
                let n = p.to_normalized(v);
                assert!((p.from_normalized(n) - v).abs() < 1e-9, "{}", p.name);
            }
            assert_eq!(p.sanitize(f64::NAN), p.default);
        }
        assert_eq!(PARAMS[BITRATE as usize].step_count(), 31);
        assert_eq!(PARAMS[BITRATE as usize].sanitize(2100.0), 2000.0);
        assert_eq!(PARAMS[MONITOR as usize].parse("difference"), Some(2.0));
        for (i, p) in PARAMS.iter().enumerate() {
            assert_eq!(p.id as usize, i);
        }
    }
}
