//! Manifest mode: FunCodec's `wav.scp` in, `codecs.txt` out, split into shards and run on threads.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};

/// `i/N`: this process takes utterances whose 0-based index is `i` modulo `N` (Slurm
/// `$SLURM_ARRAY_TASK_ID/N`, Kubernetes `$JOB_COMPLETION_INDEX/N`).
#[derive(Clone, Copy, Debug)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Shard, String> {
        let (i, n) = s.split_once('/').ok_or("expected i/N, e.g. 0/4")?;
        let index: usize = i
            .trim()
            .parse()
            .map_err(|_| format!("bad shard index {i:?}"))?;
        let count: usize = n
            .trim()
            .parse()
            .map_err(|_| format!("bad shard count {n:?}"))?;
        if count == 0 || index >= count {
            return Err(format!("shard {index}/{count}: need 0 <= i < N"));
        }
        Ok(Shard { index, count })
    }
}

pub fn read_scp(path: &Path) -> Result<Vec<(String, PathBuf)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((id, wav)) = line.split_once(char::is_whitespace) else {
            bail!("{}:{}: expected `uttid path`", path.display(), n + 1);
        };
        let wav = wav.trim();
        if wav.ends_with('|') {
            bail!(
                "{}:{}: Kaldi pipe entries (`cmd |`) are not supported; list files",
                path.display(),
                n + 1
            );
        }
        let p = PathBuf::from(wav);
        out.push((
            id.to_string(),
            if p.is_absolute() { p } else { base.join(p) },
        ));
    }
    Ok(out)
}

/// Runs `work` on every item with `jobs` threads; results come back in input order. The first
/// error stops the remaining items from starting.
pub fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    jobs: usize,
    work: impl Fn(&T) -> Result<R> + Sync,
    mut on_done: impl FnMut(&R) + Send,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let failed = std::sync::atomic::AtomicBool::new(false);
    let done_tx = Mutex::new(&mut on_done);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(items.len().max(1)) {
            s.spawn(|| {
                while !failed.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= items.len() {
                        break;
                    }
                    let r = work(&items[i]);
                    match &r {
                        Ok(v) => (done_tx.lock().unwrap())(v),
                        Err(_) => failed.store(true, Ordering::Relaxed),
                    }
                    results.lock().unwrap()[i] = Some(r);
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for r in results.into_inner().unwrap() {
        match r {
            Some(r) => out.push(r?),
            None => bail!("stopped after an earlier error"),
        }
    }
    Ok(out)
}
