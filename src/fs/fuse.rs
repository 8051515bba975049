//! The kernel adapter: fuser's `Filesystem` over [`CubbyFs`]. The only module that knows
//! fuser's types; every handler is a call into the core and a reply.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cubby_proto::api::{Entry, EntryKind};
use fuser::{
    CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use super::{CubbyFs, FsError, Owner};

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::CharDevice => FileType::CharDevice,
        EntryKind::BlockDevice => FileType::BlockDevice,
        EntryKind::Socket => FileType::Socket,
    }
}

fn owner(req: &Request) -> Owner {
    Owner {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// How long the kernel may trust names, and the attributes of directories and links,
/// before asking again.
const KERNEL_TTL: Duration = Duration::from_secs(1);

/// Preferred I/O size reported to applications.
const BLOCK_SIZE: u32 = 128 * 1024;

/// The kernel's caches, reached through fuser's notifications.
///
/// Notifications are sent by a thread of their own: the kernel may hold one until a
/// request on the same directory is answered, and that answer may need the thread that
/// asked (a runtime worker, say). Here nothing waits for the notifying thread.
pub struct KernelNotifier {
    queue: std::sync::Mutex<std::sync::mpsc::Sender<Invalidation>>,
    direct: fuser::Notifier,
}

enum Invalidation {
    Name(u64, String),
    Attributes(u64),
}

impl KernelNotifier {
    pub fn start(notifier: fuser::Notifier) -> Self {
        let direct = notifier.clone();
        let (sender, receiver) = std::sync::mpsc::channel::<Invalidation>();
        std::thread::Builder::new()
            .name("cubby-notify".into())
            .spawn(move || {
                for invalidation in receiver {
                    // ENOENT (nothing cached) is the common answer, and harmless.
                    let _ = match invalidation {
                        Invalidation::Name(parent, name) => {
                            notifier.inval_entry(INodeNo(parent), OsStr::new(&name))
                        }
                        // A negative offset: attributes only; pages are kept per version.
                        Invalidation::Attributes(ino) => notifier.inval_inode(INodeNo(ino), -1, 0),
                    };
                }
            })
            .expect("the notification thread starts");
        Self {
            queue: std::sync::Mutex::new(sender),
            direct,
        }
    }

    fn send(&self, invalidation: Invalidation) {
        if let Ok(sender) = self.queue.lock() {
            let _ = sender.send(invalidation);
        }
    }
}

impl std::fmt::Debug for KernelNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KernelNotifier")
    }
}

impl super::KernelCache for KernelNotifier {
    fn forget_name(&self, parent: u64, name: &str) {
        self.send(Invalidation::Name(parent, name.to_owned()));
    }

    fn forget_attributes(&self, ino: u64) {
        self.send(Invalidation::Attributes(ino));
    }

    fn forget_attributes_now(&self, ino: u64) {
        let _ = self.direct.inval_inode(INodeNo(ino), -1, 0);
    }
}

/// fuser's view of the filesystem.
#[derive(Debug)]
pub struct FuseAdapter {
    fs: Arc<CubbyFs>,
}

impl FuseAdapter {
    /// How long the kernel may trust an entry's attributes. A file's size can change on
    /// another mount, and the kernel cuts reads at the size it holds: the change feed
    /// drops the attributes of what other clients change, and an open that finds a
    /// version the kernel may not know drops them before answering (`CubbyFs::open`).
    /// A file with local changes is answered from them (listings too), and a commit
    /// that ends as a conflicted copy drops what the kernel holds.
    fn attr_ttl(&self, entry: &Entry) -> Duration {
        self.fs.told_kernel(self.fs.ino_of(entry.id), entry);
        KERNEL_TTL
    }

    pub fn new(fs: Arc<CubbyFs>) -> Self {
        Self { fs }
    }

    fn reply_entry(&self, reply: ReplyEntry, result: Result<Entry, FsError>) {
        match result {
            Ok(entry) => reply.entry_with_ttls(
                &self.attr_ttl(&entry),
                &KERNEL_TTL,
                &self.attr(&entry),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// `.`, `..` and the children of a directory, with their entries.
    fn listing(&self, ino: u64) -> Result<Vec<(String, Entry)>, FsError> {
        let (dir, children) = self.fs.readdir(ino)?;
        let parent = match dir.parent_id {
            Some(parent) => self.fs.getattr(self.fs.ino_of(parent))?,
            None => dir.clone(),
        };
        let mut listing = Vec::with_capacity(children.len() + 2);
        listing.push((".".to_owned(), dir));
        listing.push(("..".to_owned(), parent));
        listing.extend(
            children
                .iter()
                .map(|child| (child.name.clone(), child.clone())),
        );
        Ok(listing)
    }

    fn attr(&self, entry: &Entry) -> FileAttr {
        let time = |ns: i64| UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64);
        let mtime = time(entry.mtime_ns);
        let kind = file_type(entry.kind);
        let nlink = if entry.kind == EntryKind::Dir { 2 } else { 1 };
        FileAttr {
            ino: INodeNo(self.fs.ino_of(entry.id)),
            size: entry.size,
            blocks: entry.size.div_ceil(512),
            atime: time(entry.atime_ns),
            mtime,
            ctime: time(entry.ctime_ns),
            crtime: mtime,
            kind,
            perm: (entry.mode & 0o7777) as u16,
            nlink,
            uid: entry.uid.unwrap_or(self.fs.config().uid),
            gid: entry.gid.unwrap_or(self.fs.config().gid),
            rdev: entry.rdev,
            blksize: BLOCK_SIZE,
            flags: 0,
        }
    }
}

fn errno(error: &FsError) -> Errno {
    if matches!(
        error,
        FsError::Io(_) | FsError::Offline | FsError::Unavailable(_)
    ) {
        tracing::warn!(%error, "request failed");
    }
    Errno::from_i32(error.errno())
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), FsError>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

/// An attribute value (or a list of names), or its size when `size` is 0.
fn reply_xattr(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn time_of(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        let _ = config.set_max_readahead(1 << 20);
        // Listings carry attributes: `ls -l` needs no lookup per entry.
        let _ = config
            .add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // O_TRUNC arrives with open: a truncating open never fetches the old content.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(parent.0, name) {
            // A name that is not there is remembered for the same second as one that is
            // (inode 0 is the protocol's negative entry): a new file's name is looked up
            // three or four times before it is created (`stat`, `open`, the create's own
            // lookup, the rename's target). A name made here goes through the kernel,
            // which replaces the negative entry; one made elsewhere shows within the
            // second, as a change to a name already known does.
            Err(FsError::NotFound) => reply.entry_with_ttls(
                &Duration::ZERO,
                &KERNEL_TTL,
                &FileAttr {
                    ino: INodeNo(0),
                    size: 0,
                    blocks: 0,
                    atime: UNIX_EPOCH,
                    mtime: UNIX_EPOCH,
                    ctime: UNIX_EPOCH,
                    crtime: UNIX_EPOCH,
                    kind: FileType::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: BLOCK_SIZE,
                    flags: 0,
                },
                Generation(0),
            ),
            result => self.reply_entry(reply, result),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(entry) => reply.attr(&self.attr_ttl(&entry), &self.attr(&entry)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The kernel has checked who may chown and chmod (default_permissions).
        match self.fs.setattr(
            ino.0,
            mode,
            (uid, gid),
            size,
            (atime.map(time_of), mtime.map(time_of)),
        ) {
            Ok(entry) => reply.attr(&self.attr_ttl(&entry), &self.attr(&entry)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let special = match mode & libc::S_IFMT {
            libc::S_IFREG => None,
            libc::S_IFIFO => Some(EntryKind::Fifo),
            libc::S_IFCHR => Some(EntryKind::CharDevice),
            libc::S_IFBLK => Some(EntryKind::BlockDevice),
            libc::S_IFSOCK => Some(EntryKind::Socket),
            _ => {
                reply.error(Errno::EPERM);
                return;
            }
        };
        let created = match special {
            Some(kind) => self.fs.mknod(parent.0, name, kind, mode, rdev, owner(req)),
            None => self
                .fs
                .create(parent.0, name, mode, owner(req))
                .and_then(|(entry, fh)| {
                    self.fs.release(fh)?;
                    Ok(entry)
                }),
        };
        match created {
            Ok(entry) => reply.entry_with_ttls(
                &self.attr_ttl(&entry),
                &KERNEL_TTL,
                &self.attr(&entry),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.reply_entry(reply, self.fs.mkdir(parent.0, name, mode, owner(req)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let Some(target) = target.to_str() else {
            reply.error(Errno::EINVAL);
            return;
        };
        self.reply_entry(
            reply,
            self.fs.symlink(parent.0, link_name, target, owner(req)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, no_replace)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        // Hard links are not supported (docs/SEMANTICS.md).
        reply.error(Errno::EPERM);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY);
        let truncate = flags.0 & libc::O_TRUNC != 0;
        match self.fs.open(ino.0, write, truncate) {
            Ok((fh, keep_cache)) => {
                let flags = if keep_cache {
                    FopenFlags::FOPEN_KEEP_CACHE
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(parent.0, name, mode, owner(req)) {
            Ok((entry, fh)) => reply.created(
                &self.attr_ttl(&entry),
                &self.attr(&entry),
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data) {
            Ok(written) => reply.written(written),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.flush(fh.0));
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.release(fh.0));
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsync(fh.0));
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.fsyncdir());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.listing(ino.0) {
            Ok(listing) => listing,
            Err(e) => {
                reply.error(errno(&e));
                return;
            }
        };
        for (index, (name, entry)) in listing.iter().enumerate().skip(offset as usize) {
            let child = INodeNo(self.fs.ino_of(entry.id));
            if reply.add(child, (index + 1) as u64, file_type(entry.kind), name) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listing = match self.listing(ino.0) {
            Ok(listing) => listing,
            Err(e) => {
                reply.error(errno(&e));
                return;
            }
        };
        for (index, (name, entry)) in listing.iter().enumerate().skip(offset as usize) {
            let attr = self.attr(entry);
            let next = (index + 1) as u64;
            if reply.add(
                attr.ino,
                next,
                name,
                &self.attr_ttl(entry),
                &attr,
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Space is what the staging area can hold: writes wait there before upload.
        match nix::sys::statvfs::statvfs(&self.fs.config().staging_dir) {
            Ok(stat) => reply.statfs(
                stat.blocks(),
                stat.blocks_free(),
                stat.blocks_available(),
                stat.files(),
                stat.files_free(),
                stat.block_size() as u32,
                cubby_proto::path::NAME_MAX as u32,
                stat.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let value = name
            .to_str()
            .map_or(Ok(None), |name| self.fs.xattr(ino.0, name));
        match value {
            Ok(Some(value)) => reply_xattr(reply, &value, size),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.xattr_names(ino.0) {
            Ok(names) => {
                let mut list = Vec::new();
                for name in names {
                    list.extend_from_slice(name.as_bytes());
                    list.push(0);
                }
                reply_xattr(reply, &list, size);
            }
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let Some(name) = name.to_str() else {
            reply.error(Errno::ENOTSUP);
            return;
        };
        let create = flags & libc::XATTR_CREATE != 0;
        let replace = flags & libc::XATTR_REPLACE != 0;
        reply_empty(
            reply,
            self.fs.set_xattr(ino.0, name, value, create, replace),
        );
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = name.to_str() else {
            reply.error(Errno::ENOTSUP);
            return;
        };
        reply_empty(reply, self.fs.remove_xattr(ino.0, name));
    }

    // What the mount does not offer answers ENOSYS without a word in the log: the
    // kernel then stops asking and does the work itself (`cp` copies through read and
    // write, `lseek` finds data and holes from the size). fuser's own defaults log a
    // warning with the whole request every time.

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: ReplyLseek,
    ) {
        reply.error(Errno::ENOSYS);
    }

    /// Space is not reserved ahead (`posix_fallocate` in the C library falls back to
    /// writing zeros; `fallocate(1)` says the operation is not supported).
    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }
}
