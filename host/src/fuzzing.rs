//! The entry points of the coverage-guided fuzz targets (the `fuzz/` crate,
//! run by `scripts/fuzz` on nightly Rust), kept in the library so that a
//! stable test replays the checked-in corpus (`fuzz/corpus/<target>/`)
//! through the very same code on every `cargo test`.
//!
//! Each function takes arbitrary bytes and must return without panicking,
//! whatever they hold: that is the whole property. What the code under
//! test answers (a value or a typed error) is not the point here; its own
//! tests check the answers.

use std::num::NonZeroUsize;
use std::path::Path;

use crate::lsn::Lsn;
use crate::pgoutput::Batcher;

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// The fuzz targets, by the name of their corpus folder.
pub const TARGETS: &[(&str, Target)] = &[
    ("pgoutput", pgoutput),
    ("manifest", manifest),
    ("batch_json", batch_json),
];

/// A stream of pgoutput messages through the decoder, the relation cache
/// and the batcher. The input is a sequence of frames, each a length byte
/// followed by that many bytes (the last frame may be shorter), so that a
/// mutation can change one message without moving the others.
pub fn pgoutput(data: &[u8]) {
    let mut batcher = Batcher::new(NonZeroUsize::new(4).unwrap_or(NonZeroUsize::MIN));
    let mut rest = data;
    let mut lsn = 0x100;
    while let Some((&len, tail)) = rest.split_first() {
        let (message, next) = tail.split_at(usize::from(len).min(tail.len()));
        // Whatever was batched must serialise (plugins receive it).
        if let Ok(out) = batcher.push_bytes(message, Lsn(lsn))
            && let Some(batch) = out.batch
        {
            let _ = serde_json::to_vec(&batch);
        }
        lsn += 0x10;
        rest = next;
    }
}

/// A manifest's text through the whole reader (TOML, `${VAR}`s, every
/// section and cross-check). Every variable is set, so substitution is
/// exercised; plugin files are looked for in a folder that does not exist.
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |name: &str| (!name.starts_with("UNSET")).then(|| format!("v-{name}"));
    let _ = crate::config::Manifest::parse(text, Path::new("/nonexistent/fuzz/sluice.toml"), &env);
}

/// `sluice plugin run --input`'s reader and its checks; what is accepted
/// must serialise back.
pub fn batch_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(batches) = crate::batch_json::read(text) {
        let _ = serde_json::to_string(&batches);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every checked-in corpus file runs through its target (what CI
    /// replays on stable Rust, without libFuzzer).
    #[test]
    fn the_checked_in_corpus_replays_without_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
        for (name, target) in TARGETS {
            let dir = root.join(name);
            let files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .collect();
            assert!(
                files.len() >= 3,
                "corpus {} has {} files",
                dir.display(),
                files.len()
            );
            for file in files {
                let data = std::fs::read(&file).unwrap();
                let outcome = std::panic::catch_unwind(|| target(&data));
                assert!(outcome.is_ok(), "{name} panicked on {}", file.display());
            }
        }
    }
}
