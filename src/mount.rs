//! `cubby mount`: builds the filesystem, mounts it, serves it until unmounted or
//! signalled (SIGINT/SIGTERM unmount cleanly), and reports in one line when it is ready.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use crate::fs::fuse::{FuseAdapter, KernelNotifier};
use crate::fs::{CubbyFs, FsConfig};
use crate::remote::Remote;

/// Where a mount keeps its local state, and how it presents itself.
#[derive(Debug, Clone)]
pub struct MountOptions {
    pub staging_dir: PathBuf,
    pub cache_dir: PathBuf,
    pub cache_bytes: u64,
    /// Free space writes leave on the staging area's disk (see [`FsConfig`]).
    pub staging_reserve_bytes: u64,
    /// Let other users (and root) use the mount (`allow_other`).
    pub allow_other: bool,
    /// Threads serving kernel requests.
    pub threads: usize,
}

impl MountOptions {
    /// Defaults under the user's data and cache directories, per mount point.
    pub fn defaults_for(mountpoint: &Path) -> Self {
        let key = blake3::hash(mountpoint.to_string_lossy().as_bytes()).to_hex()[..16].to_owned();
        let data = dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cubby");
        let cache = dirs::cache_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("cubby");
        Self {
            staging_dir: data.join("staging").join(&key),
            cache_dir: cache.join("chunks"),
            cache_bytes: 4 << 30,
            staging_reserve_bytes: 512 << 20,
            allow_other: false,
            threads: 8,
        }
    }
}

fn fusermount3() -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").is_file())
    })
}

fn current_ids() -> (u32, u32) {
    (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    )
}

/// Mounts the store at `mountpoint` and serves it until it is unmounted.
pub async fn mount(
    remote: Remote,
    mountpoint: PathBuf,
    options: MountOptions,
) -> Result<(), String> {
    if !Path::new("/dev/fuse").exists() {
        return Err("/dev/fuse is missing: load the fuse module (modprobe fuse)".into());
    }
    if !mountpoint.is_dir() {
        return Err(format!("{}: not a directory", mountpoint.display()));
    }
    let (uid, gid) = current_ids();
    let config = FsConfig {
        staging_dir: options.staging_dir.clone(),
        cache_dir: options.cache_dir.clone(),
        cache_bytes: options.cache_bytes,
        staging_reserve_bytes: options.staging_reserve_bytes,
        metadata_ttl: Duration::from_secs(1),
        uid,
        gid,
    };
    let runtime = tokio::runtime::Handle::current();
    let fs = tokio::task::spawn_blocking(move || CubbyFs::new(remote, runtime, config))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot start the mount: {e}"))?;

    let mut fuse_config = fuser::Config::default();
    fuse_config.mount_options = vec![
        MountOption::FSName("cubby".into()),
        MountOption::Subtype("cubby".into()),
        MountOption::DefaultPermissions,
    ];
    if fusermount3() {
        fuse_config.mount_options.push(MountOption::AutoUnmount);
    }
    fuse_config.acl = if options.allow_other {
        SessionACL::All
    } else {
        SessionACL::RootAndOwner
    };
    fuse_config.n_threads = Some(options.threads.max(1));
    let fs = Arc::new(fs);
    let adapter = FuseAdapter::new(Arc::clone(&fs));
    let mut session = fuser::Session::new(adapter, &mountpoint, &fuse_config)
        .map_err(|e| format!("cannot mount {}: {e}", mountpoint.display()))?;
    fs.set_kernel_cache(Box::new(KernelNotifier::start(session.notifier())));
    crate::fs::sync::start(&fs);
    let mut unmounter = session.unmount_callable();
    println!("cubby: mounted {}", mountpoint.display());
    tokio::spawn(async move {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async {
                match terminate.as_mut() {
                    Some(signal) => { signal.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {},
        }
        tracing::info!("signal: unmounting");
        let _ = unmounter.unmount();
    });
    let ended = tokio::task::spawn_blocking(move || session.run())
        .await
        .map_err(|e| e.to_string())?;
    let stopping = Arc::clone(&fs);
    let _ = tokio::task::spawn_blocking(move || stopping.unmounted()).await;
    // What it knows of the tree, for a next start without the server.
    let saving = Arc::clone(&fs);
    let _ = tokio::task::spawn_blocking(move || saving.save_known(true)).await;
    ended.map_err(|e| format!("mount session ended: {e}"))?;
    eprintln!("cubby: unmounted {}", mountpoint.display());
    Ok(())
}

/// Unmounts a Cubby mount point (with fusermount3 when present, else umount).
pub fn unmount(mountpoint: &Path) -> Result<(), String> {
    let status = if fusermount3() {
        std::process::Command::new("fusermount3")
            .arg("-u")
            .arg(mountpoint)
            .status()
    } else {
        std::process::Command::new("umount")
            .arg(mountpoint)
            .status()
    };
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "unmounting {} failed ({status})",
            mountpoint.display()
        )),
        Err(e) => Err(format!("cannot run the unmount command: {e}")),
    }
}
