//! Saved state (both formats use the same bytes): parameter values and the model choice.
//!
//! Layout, little-endian: `b"FCMS"`, version `u32` (1), payload length `u32`, then the payload:
//! parameter count `u32`, that many `(id u32, plain value f64)`, model path length `u32` and the
//! path in UTF-8 (empty: the default model). Anything else (wrong magic, version or length,
//! trailing bytes, non-finite values, invalid UTF-8) is rejected as a whole.

pub const MAGIC: &[u8; 4] = b"FCMS";
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq)]
pub struct SavedState {
    pub params: Vec<(u32, f64)>,
    /// Empty: the default model (FUNCODEC_MODEL, else the bundled path).
    pub model: String,
}

pub fn encode(s: &SavedState) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&(s.params.len() as u32).to_le_bytes());
    for (id, v) in &s.params {
        payload.extend_from_slice(&id.to_le_bytes());
        payload.extend_from_slice(&v.to_le_bytes());
    }
    payload.extend_from_slice(&(s.model.len() as u32).to_le_bytes());
    payload.extend_from_slice(s.model.as_bytes());
    let mut out = Vec::with_capacity(12 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        if self.0.len() < n {
            return Err("state is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

pub fn decode(bytes: &[u8]) -> Result<SavedState, String> {
    let mut r = Reader(bytes);
    if r.take(4)
        .map_err(|_| "state is empty or too short".to_string())?
        != MAGIC
    {
        return Err("not a FunCodec Monitor state (bad magic)".into());
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(format!("unsupported state version {version}"));
    }
    let len = r.u32()? as usize;
    if r.0.len() != len {
        return Err(format!(
            "state length mismatch: header says {len} bytes, {} present",
            r.0.len()
        ));
    }
    let count = r.u32()? as usize;
    if count > 1024 {
        return Err("state has too many parameters".into());
    }
    let mut params = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.u32()?;
        let v = r.f64()?;
        if !v.is_finite() {
            return Err(format!("parameter {id} is not finite"));
        }
        params.push((id, v));
    }
    let n = r.u32()? as usize;
    let model = std::str::from_utf8(r.take(n)?)
        .map_err(|_| "model path is not UTF-8".to_string())?
        .to_string();
    if !r.0.is_empty() {
        return Err("trailing bytes in state".into());
    }
    Ok(SavedState { params, model })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let s = SavedState {
            params: vec![(0, 3000.0), (2, 50.0)],
            model: "/some/model".into(),
        };
        let b = encode(&s);
        assert_eq!(decode(&b).unwrap(), s);
        assert!(decode(&[]).is_err());
        assert!(decode(b"FCMS").is_err());
        assert!(decode(&b[..b.len() - 1]).is_err());
        let mut longer = b.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut nan = encode(&SavedState {
            params: vec![(1, 0.0)],
            model: String::new(),
        });
        nan[20..28].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode(&nan).is_err());
        // Random bytes never decode.
        let mut x = 12345u64;
        for len in 0..200 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (x >> 33) as u8
                })
                .collect();
            assert!(decode(&v).is_err());
        }
    }
}
