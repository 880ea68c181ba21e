//! Compiled components, kept in memory and on disk so that a restart (or a
//! second pipeline using the same plugin) does not compile again.
//!
//! A disk entry is keyed by the SHA-256 of the component file's bytes and
//! by a hash of everything that makes an artifact loadable by this engine
//! (wasmtime's version, target and compiler settings:
//! [`Engine::precompile_compatibility_hash`]). Its content is a small header
//! — a magic tag and the SHA-256 of the artifact — followed by the artifact
//! as [`Component::serialize`] wrote it.
//!
//! Invariants: an entry is written to a temporary file in the cache folder,
//! flushed, and renamed into place, so a reader never sees half an entry; an
//! entry that is unreadable, truncated, corrupt or from another engine is
//! deleted and the component recompiled — the cache can cost time, never
//! correctness or availability. Compiling is CPU-bound and slow (seconds
//! for large components): callers on an async runtime go through
//! [`PluginRuntime`](super::PluginRuntime)'s async methods, which run it on
//! a blocking thread.

use std::collections::HashMap;
use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

const MAGIC: &[u8; 8] = b"SLUICEC1";
const HEADER_LEN: usize = MAGIC.len() + 32;

/// How often each way of obtaining a component was taken; the tests and the
/// benchmark read these to prove that a warm cache does not compile.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Components compiled from Wasm.
    pub compiled: u64,
    /// Components loaded from a disk entry.
    pub disk_hits: u64,
    /// Components found already loaded in this process.
    pub memory_hits: u64,
    /// Disk entries found unusable and recompiled.
    pub rejected: u64,
}

#[derive(Debug, Default)]
struct Stats {
    compiled: AtomicU64,
    disk_hits: AtomicU64,
    memory_hits: AtomicU64,
    rejected: AtomicU64,
}

/// The component cache of one engine.
#[derive(Debug)]
pub(super) struct ComponentCache {
    engine: Engine,
    dir: Option<PathBuf>,
    engine_key: String,
    loaded: Mutex<HashMap<[u8; 32], Component>>,
    stats: Stats,
}

impl ComponentCache {
    /// A cache for `engine`, persisting under `dir` when there is one and
    /// it is private to this user (see [`private_dir`]); otherwise compiled
    /// components are kept in memory only, with a warning.
    pub(super) fn new(engine: Engine, dir: Option<PathBuf>) -> Self {
        let dir = dir.filter(|dir| match private_dir(dir) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "not using the component cache folder: compiled components are kept in memory only");
                false
            }
        });
        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = hex(&hasher.0.finalize())[..16].to_owned();
        ComponentCache {
            engine,
            dir,
            engine_key,
            loaded: Mutex::default(),
            stats: Stats::default(),
        }
    }

    pub(super) fn stats(&self) -> CacheStats {
        CacheStats {
            compiled: self.stats.compiled.load(Ordering::Relaxed),
            disk_hits: self.stats.disk_hits.load(Ordering::Relaxed),
            memory_hits: self.stats.memory_hits.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
        }
    }

    /// The compiled component for the file at `path`. Blocking: reads files
    /// and may compile.
    pub(super) fn load(&self, path: &Path) -> Result<Component, PluginError> {
        let bytes = fs::read(path).map_err(|source| PluginError::Read {
            path: path.to_owned(),
            source,
        })?;
        check_header(path, &bytes)?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();

        if let Some(component) = self.memory().get(&digest) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(component.clone());
        }
        let entry = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}-{}.cwasm", hex(&digest), self.engine_key)));
        let cached = entry.as_deref().and_then(|entry| self.read_entry(entry));
        let component = match cached {
            Some(component) => {
                self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                component
            }
            None => {
                let component = Component::new(&self.engine, &bytes).map_err(|source| {
                    PluginError::Compile {
                        path: path.to_owned(),
                        source,
                    }
                })?;
                self.stats.compiled.fetch_add(1, Ordering::Relaxed);
                if let Some(entry) = &entry {
                    self.write_entry(entry, &component);
                }
                component
            }
        };
        self.memory().insert(digest, component.clone());
        Ok(component)
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Component>> {
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The component in a disk entry, or `None` when there is no usable one
    /// (a broken entry is removed so the next write replaces it).
    fn read_entry(&self, entry: &Path) -> Option<Component> {
        let bytes = match fs::read(entry) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(entry = %entry.display(), error = %e, "cannot read a cached component; compiling instead");
                return None;
            }
        };
        match self.decode_entry(&bytes) {
            Ok(component) => Some(component),
            Err(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(entry = %entry.display(), %reason, "discarding an unusable cached component; compiling instead");
                let _ = fs::remove_file(entry);
                None
            }
        }
    }

    fn decode_entry(&self, bytes: &[u8]) -> Result<Component, String> {
        if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
            return Err("not a Sluice cache entry".into());
        }
        let (header, artifact) = bytes.split_at(HEADER_LEN);
        if Sha256::digest(artifact).as_slice() != &header[MAGIC.len()..] {
            return Err("checksum mismatch (truncated or corrupt)".into());
        }
        // SAFETY: `Component::deserialize` trusts its input to be an artifact
        // that wasmtime produced. This one was, as far as file ownership and
        // permissions can show: the folder passed `private_dir`
        // when the cache was made (a real folder, owned by this process's
        // user, writable by no one else), so only this user can have put a
        // file there; the header's checksum proves the bytes are exactly
        // those written after it, which `write_entry` takes from
        // `Component::serialize`; and wasmtime still checks that the
        // artifact's version and engine settings match before using it. What
        // it relies on beyond that: no other process of this user (or root)
        // writes forged entries there, and no one swaps the folder or one of
        // its parents for another after the check.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, artifact) };
        component.map_err(|e| format!("{e}"))
    }

    /// Writes a disk entry atomically; failures only cost a recompilation
    /// next time, so they are logged, not returned.
    fn write_entry(&self, entry: &Path, component: &Component) {
        if let Err(e) = self.try_write_entry(entry, component) {
            tracing::warn!(entry = %entry.display(), error = %e, "cannot write the component cache entry");
        }
    }

    fn try_write_entry(
        &self,
        entry: &Path,
        component: &Component,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = entry.parent().ok_or("cache entry has no folder")?;
        create_private_dir(dir)?;
        let artifact = component.serialize()?;
        let mut file = tempfile::NamedTempFile::new_in(dir)?;
        file.write_all(MAGIC)?;
        file.write_all(&Sha256::digest(&artifact))?;
        file.write_all(&artifact)?;
        file.as_file().sync_all()?;
        file.persist(entry)?;
        Ok(())
    }
}

/// Tells a component from a core module or a non-Wasm file by the preamble:
/// `\0asm`, then a version field whose upper half is the layer (0 for core
/// modules, 1 for components).
fn check_header(path: &Path, bytes: &[u8]) -> Result<(), PluginError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(PluginError::NotWasm {
            path: path.to_owned(),
        });
    }
    if bytes[6..8] == [0, 0] {
        return Err(PluginError::CoreModule {
            path: path.to_owned(),
        });
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates `dir` (mode 0700) when it does not exist, then checks that it may
/// be trusted with compiled code: a folder, not a link to one, owned by this
/// process's user, and not writable by its group or others. An entry is
/// loaded as native code, so a folder someone else can write to would let
/// them run code as this user.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    create_private_dir(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("cannot inspect it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a folder (a symbolic link, or a file)".into());
    }
    // A file this process creates is owned by the user it runs as.
    let me = tempfile::tempfile()
        .and_then(|f| f.metadata())
        .map_err(|e| format!("cannot tell which user this process runs as: {e}"))?
        .uid();
    if meta.uid() != me {
        return Err(format!(
            "it is owned by user id {}, not by this process's user ({me})",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "its group or other users may write to it (mode {:o}); run `chmod go-w` on it",
            mode & 0o777
        ));
    }
    Ok(())
}

/// The default cache folder: `$XDG_CACHE_HOME/sluice`, else
/// `$HOME/.cache/sluice`; `None` when neither variable is set.
pub fn default_cache_dir() -> Option<PathBuf> {
    let nonempty = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|home| home.join(".cache")))
        .map(|base| base.join("sluice"))
}

fn hex(bytes: &[u8]) -> String {
    crate::model::hex_bytes::encode(bytes)
}

/// Feeds `Hash` output into SHA-256, so that the engine key is stable across
/// processes (unlike `DefaultHasher`, which is only stable within a build).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Never called: the digest is read with `finalize` instead.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_distinguishes_files() {
        let p = Path::new("x.wasm");
        assert!(matches!(
            check_header(p, b"hello world"),
            Err(PluginError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header(p, b"\0asm\x01\0\0\0"),
            Err(PluginError::CoreModule { .. })
        ));
        assert!(check_header(p, b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn only_a_private_folder_is_trusted() {
        use std::os::unix::fs::PermissionsExt as _;
        let base = tempfile::tempdir().unwrap();
        let fresh = base.path().join("new/cache");
        private_dir(&fresh).unwrap();
        let mode = fs::metadata(&fresh).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);

        let shared = base.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let err = private_dir(&shared).unwrap_err();
        assert!(err.contains("may write to it (mode 777)"), "{err}");

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&fresh, &link).unwrap();
        assert!(private_dir(&link).unwrap_err().contains("not a folder"));

        // The cache then keeps components in memory only.
        let cache = ComponentCache::new(Engine::default(), Some(shared));
        assert!(cache.dir.is_none());
        let cache = ComponentCache::new(Engine::default(), Some(fresh.clone()));
        assert_eq!(cache.dir, Some(fresh));
    }
}
